/**
 * Capsule fidelity: what a codec costs a resumed session. Suspend after a prompt, encode with a
 * codec, decode, resume, and compare the next steps with a session that never stopped.
 * @module
 */
import type { InferenceBackend } from "../engine/backend.ts";
import { Session } from "../engine/session.ts";
import { argmax } from "../engine/sampling.ts";
import { relL2 } from "../engine/verify.ts";
import type { KvCodec, StateCodec } from "./codecs.ts";
import { decodeCapsule } from "./decode.ts";
import { encodeCapsuleBytes } from "./encode.ts";
import type { SessionSnapshot } from "./snapshot.ts";

/** The measured cost of one codec on one suspended session. */
export interface FidelityReport {
  stateCodec: StateCodec;
  kvCodec: KvCodec;
  capsuleBytes: number;
  /** Worst `‖resumed − uninterrupted‖ / ‖uninterrupted‖` over the compared steps' logits. */
  maxLogitsRelL2: number;
  /** Steps whose argmax equals the uninterrupted run's, fed the same tokens (teacher-forced). */
  top1Agree: number;
  steps: number;
  /** First step where the resumed greedy run emits a different token; null if none diverged. */
  greedyDivergence: number | null;
  /** Whether the resumed greedy run's tokens and logits are bit-identical to the uninterrupted run. */
  bitIdentical: boolean;
}

/** Logits of `steps` teacher-forced steps continuing from a snapshot with the given tokens. */
async function forcedLogits(
  backend: InferenceBackend,
  snap: SessionSnapshot,
  feed: number[],
): Promise<Float32Array[]> {
  const s = new Session(backend, snap);
  const out: Float32Array[] = [];
  let pending = snap.tokens.slice(snap.state.position);
  for (const next of feed) {
    const { logits } = await backend.forward(s.state, pending, { logits: "last" });
    out.push(logits);
    pending = [next];
  }
  return out;
}

async function greedy(backend: InferenceBackend, snap: SessionSnapshot, steps: number): Promise<number[]> {
  const s = new Session(backend, snap);
  const ids: number[] = [];
  for await (const id of s.generate({ maxTokens: steps, temperature: 0, ignoreEos: true })) ids.push(id);
  return ids;
}

/**
 * Measure each codec on a snapshot taken after a prompt: `steps` greedy tokens of the
 * uninterrupted session are the reference; each codec's resumed session is fed the same tokens.
 */
export async function measureFidelity(
  backend: InferenceBackend,
  snapshot: SessionSnapshot,
  fingerprint: string,
  codecs: { stateCodec: StateCodec; kvCodec: KvCodec }[],
  steps = 32,
): Promise<FidelityReport[]> {
  const config = backend.config;
  const reference = await greedy(backend, snapshot, steps);
  const refLogits = await forcedLogits(backend, snapshot, reference);
  const reports: FidelityReport[] = [];
  for (const c of codecs) {
    const bytes = await encodeCapsuleBytes(snapshot, { fingerprint, config, ...c });
    const resumed = await decodeCapsule(bytes, { fingerprint, config });
    const logits = await forcedLogits(backend, resumed, reference);
    const ids = await greedy(backend, resumed, steps);
    let worst = 0, agree = 0, identical = true;
    logits.forEach((l, i) => {
      const r = relL2(l, refLogits[i]);
      worst = Math.max(worst, r);
      if (argmax(l) === argmax(refLogits[i])) agree++;
      if (r !== 0) identical = false;
    });
    const diverged = ids.findIndex((id, i) => id !== reference[i]);
    reports.push({
      ...c,
      capsuleBytes: bytes.length,
      maxLogitsRelL2: worst,
      top1Agree: agree,
      steps,
      greedyDivergence: diverged < 0 ? null : diverged,
      bitIdentical: identical && diverged < 0,
    });
  }
  return reports;
}

/** Every codec pair the format offers, exact first. */
export const ALL_CODECS: { stateCodec: StateCodec; kvCodec: KvCodec }[] = [
  { stateCodec: "f32", kvCodec: "raw" },
  { stateCodec: "f32", kvCodec: "int8" },
  { stateCodec: "f32", kvCodec: "int4" },
  { stateCodec: "f16", kvCodec: "raw" },
  { stateCodec: "bf16", kvCodec: "raw" },
];
