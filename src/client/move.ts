/**
 * Moving an agent's memory between machines: a session and its named checkpoints are capsules, so
 * moving them is copying bytes from one Capsule service or sidecar to another running the same
 * model. Every capsule is checked on arrival (checksums, model fingerprint) before it is stored.
 * @module
 */
import type { CapsuleClient } from "./http.ts";
import type { SessionInfo } from "./types.ts";

/** Options of {@link moveMemory}. */
export interface MoveOptions {
  /** The id on the destination (default: the same id). */
  as?: string;
  /** Copy the named checkpoints too (default true). */
  checkpoints?: boolean;
}

/**
 * Copies session `id` from `from` to `to`: first its checkpoints (each stored on the destination
 * by uploading its capsule and checkpointing it), then the current version, which the destination
 * session ends at. The source is left as it was; delete it to complete a move. Resolves to the
 * destination session. A destination serving another model refuses the first capsule with
 * `capsule_model_mismatch` before anything is stored there.
 */
export async function moveMemory(
  from: CapsuleClient,
  to: CapsuleClient,
  id: string,
  opts: MoveOptions = {},
): Promise<SessionInfo> {
  const target = opts.as ?? id;
  // The current version first, so what arrives is one consistent version even if the source
  // keeps changing while the checkpoints are copied.
  const current = await from.getCapsule(id);
  if (opts.checkpoints ?? true) {
    for (const cp of await from.checkpoints(id)) {
      await to.putCapsule(target, await from.getCheckpointCapsule(id, cp.name));
      await to.checkpoint(target, cp.name);
    }
  }
  const r = await to.putCapsule(target, current.bytes);
  return { id: r.id, version: r.version, tokens: r.tokens };
}
