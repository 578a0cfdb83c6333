/**
 * Agent memory in-process: the {@link MemoryApi} operations over a {@link SessionStore}, committing
 * every change as a new version with compare-and-set, exactly as the HTTP service does (same
 * capsule encoding, same metadata), so a store can be shared by this library, the service and the
 * sidecar. The sidecar serves the operations the service lacks (open, checkpoints, rewind) by
 * calling this class.
 *
 * Checkpoints and rewind are cheap: a checkpoint is a copy of the session's current capsule (the
 * recurrent state is constant-size; only the few global-attention layers carry a KV cache), and a
 * rewind commits that copy as the next version. No engine work is involved in either.
 * @module
 */
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import { numericsChangedFrom } from "../capsule/decode.ts";
import type { NumericsDiff } from "../capsule/numerics.ts";
import { CapsuleError } from "../errors.ts";
import type { SessionMeta, SessionRecord, SessionStore } from "../store/types.ts";
import { ifVersionConflict, NAME_PATTERN, sessionNotFound } from "../store/validate.ts";
import { newSessionId } from "../server/sessions.ts";
import type { Capsule, GenerationResult } from "./local.ts";
import { inputToIds } from "./input.ts";
import { type TokenDelta, TokenStream } from "./stream.ts";
import type {
  CheckpointSummary,
  GenerateOptions,
  IfVersion,
  Input,
  ListSessionsOptions,
  MemoryApi,
  OpenedMemory,
  RecallResult,
  SessionInfo,
  SessionList,
  SessionSummary,
} from "./types.ts";

function checkpointNotFound(id: string, name: string): CapsuleError {
  return new CapsuleError(
    "checkpoint_not_found",
    `session ${JSON.stringify(id)} has no checkpoint ${JSON.stringify(name)}`,
    { id, checkpoint: name },
  );
}

/** Where a record stands, as the API reports it. */
export function sessionInfo(rec: SessionRecord): SessionInfo {
  return { id: rec.id, version: rec.version, tokens: rec.meta.tokens };
}

/** The memory operations of one tenant over one store, on one loaded model. */
export class Memory implements MemoryApi {
  /** The model sessions are resumed on. */
  readonly capsule: Capsule;
  /** Where sessions are kept. */
  readonly store: SessionStore;
  /** Whose sessions these are. */
  readonly tenant: string;

  /** Usually obtained from {@link Capsule.memory}. */
  constructor(capsule: Capsule, store: SessionStore, tenant = "default") {
    this.capsule = capsule;
    this.store = store;
    this.tenant = tenant;
  }

  /** An id that cannot exist is simply not found (as in the HTTP service). */
  #checkId(id: string): void {
    if (typeof id !== "string" || !NAME_PATTERN.test(id)) throw sessionNotFound(String(id));
  }

  async #get(id: string, ifVersion?: number): Promise<{ record: SessionRecord; capsule: Uint8Array }> {
    this.#checkId(id);
    const got = await this.store.get(this.tenant, id);
    if (!got) throw sessionNotFound(id);
    if (ifVersion !== undefined && got.record.version !== ifVersion) {
      throw ifVersionConflict(id, ifVersion, got.record.version);
    }
    return got;
  }

  /** The session's current version, decoded, from this process's cache when it holds that version. */
  async #load(
    id: string,
    ifVersion?: number,
  ): Promise<{ record: SessionRecord; snapshot: SessionSnapshot; numericsChanged: NumericsDiff | null }> {
    this.#checkId(id);
    const cache = this.capsule.snapshotCache(this.store);
    if (cache.has(this.tenant, id)) {
      const record = await this.store.head(this.tenant, id);
      if (!record) throw sessionNotFound(id);
      if (ifVersion !== undefined && record.version !== ifVersion) {
        throw ifVersionConflict(id, ifVersion, record.version);
      }
      const snapshot = cache.get(this.tenant, id, record);
      if (snapshot) {
        return {
          record: this.#sameModel(record),
          snapshot,
          numericsChanged: numericsChangedFrom(snapshot, this.capsule.engine.numerics),
        };
      }
    }
    const got = await this.#get(id, ifVersion);
    this.#sameModel(got.record);
    const snapshot = await this.capsule.readCapsule(got.capsule);
    cache.put(this.tenant, id, got.record, snapshot, got.capsule.length);
    return {
      record: got.record,
      snapshot,
      numericsChanged: numericsChangedFrom(snapshot, this.capsule.engine.numerics),
    };
  }

  #sameModel(record: SessionRecord): SessionRecord {
    const m = this.capsule.model;
    if (record.meta.model !== m.fingerprint) {
      throw new CapsuleError(
        "capsule_model_mismatch",
        `session ${JSON.stringify(record.id)} was produced by another model; this memory runs ${m.id}`,
      );
    }
    return record;
  }

  /** Commits `snapshot` as the next version after `base` (null: create). Metadata as the service writes it. */
  async #commit(
    id: string,
    snapshot: SessionSnapshot,
    base: SessionRecord | null,
    capsule?: Uint8Array,
  ): Promise<SessionRecord> {
    const bytes = capsule ?? await this.capsule.writeCapsule(snapshot);
    const now = new Date().toISOString();
    const meta: SessionMeta = {
      model: this.capsule.model.fingerprint,
      tokens: snapshot.tokens.length,
      createdAt: base?.meta.createdAt ?? now,
      updatedAt: now,
    };
    if (base?.meta.parent !== undefined) meta.parent = base.meta.parent;
    if (base?.meta.labels) meta.labels = { ...base.meta.labels };
    try {
      const rec = await this.store.commit(this.tenant, id, bytes, meta, base ? base.version : null);
      this.capsule.snapshotCache(this.store).put(this.tenant, id, rec, snapshot, bytes.length);
      return rec;
    } catch (e) {
      if (e instanceof CapsuleError && e.code === "version_conflict" && base) {
        throw ifVersionConflict(id, base.version, (e.details?.current ?? null) as number | null);
      }
      throw e;
    }
  }

  #summary(rec: SessionRecord): SessionSummary {
    const m = this.capsule.model;
    return {
      ...sessionInfo(rec),
      capsuleBytes: rec.capsuleBytes,
      model: rec.meta.model === m.fingerprint ? m.id : rec.meta.model,
      ...(rec.meta.parent !== undefined ? { parent: rec.meta.parent } : {}),
      createdAt: rec.meta.createdAt,
      updatedAt: rec.meta.updatedAt,
    };
  }

  /**
   * Opens the session `id`, creating it empty when absent. Ids are 1..128 characters of
   * `[A-Za-z0-9._-]` (else `invalid_request`). Two agents opening one id at once both get it.
   */
  async open(id: string): Promise<OpenedMemory> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const head = await this.store.head(this.tenant, id);
      if (head) return { ...sessionInfo(head), created: false };
      const empty = this.capsule.engine.newSession().snapshot();
      try {
        return { ...sessionInfo(await this.#commit(id, empty, null)), created: true };
      } catch (e) {
        // Someone created it between our head and our commit: it exists now, so read it again.
        if (!(e instanceof CapsuleError && e.code === "version_conflict")) throw e;
      }
    }
    throw new CapsuleError("version_conflict", `session ${JSON.stringify(id)} keeps changing; try again`, {
      current: null,
    });
  }

  /** Creates a session under a new random id, optionally with input. */
  async create(input?: Input): Promise<SessionInfo> {
    const s = await this.capsule.createSession(input);
    return sessionInfo(await this.#commit(newSessionId(), s.snapshot(), null));
  }

  /** Appends input (prefill only) and commits. */
  async remember(id: string, input: Input, opts: IfVersion = {}): Promise<SessionInfo> {
    const { record, snapshot, numericsChanged } = await this.#load(id, opts.ifVersion);
    const ids = inputToIds(this.capsule.tokenizer, input, snapshot.tokens.length === 0);
    if (ids.length === 0) return sessionInfo(record);
    const s = await this.capsule.restore(snapshot, { adoptResidency: true });
    await s.append(ids);
    const rec = await this.#commit(id, s.snapshot({ moveResidency: true }), record);
    return { ...sessionInfo(rec), ...(numericsChanged ? { numericsChanged } : {}) };
  }

  /**
   * Generates from the session and commits the result when the generation ends. Leaving the loop
   * early or aborting commits nothing (the session stays at its version), as over HTTP.
   */
  recall(id: string, opts: GenerateOptions & IfVersion = {}): TokenStream<RecallResult> {
    return new TokenStream(this.#recall(id, opts));
  }

  async *#recall(id: string, opts: GenerateOptions & IfVersion): AsyncGenerator<TokenDelta, RecallResult> {
    const { record, snapshot, numericsChanged } = await this.#load(id, opts.ifVersion);
    if (snapshot.tokens.length === 0 && (opts.maxTokens ?? 16) > 0) {
      throw new CapsuleError(
        "invalid_argument",
        "cannot generate from an empty session: remember something first",
      );
    }
    const s = await this.capsule.restore(snapshot, { adoptResidency: true });
    const { ifVersion: _, ...genOpts } = opts;
    const stream = s.generate(genOpts);
    for await (const t of stream) yield t;
    const r: GenerationResult = await stream.result;
    const rec = await this.#commit(id, s.snapshot({ moveResidency: true }), record);
    return {
      ...sessionInfo(rec),
      ...(numericsChanged ? { numericsChanged } : {}),
      outputIds: r.outputIds,
      text: r.text,
      finishReason: r.finishReason,
    };
  }

  /** A new session (random id) holding the same capsule, with `parent` = `id`. No engine work. */
  async branch(id: string, opts: IfVersion = {}): Promise<SessionInfo> {
    const got = await this.#get(id, opts.ifVersion);
    const now = new Date().toISOString();
    const meta: SessionMeta = { ...got.record.meta, createdAt: now, updatedAt: now, parent: id };
    return sessionInfo(await this.store.commit(this.tenant, newSessionId(), got.capsule, meta, null));
  }

  /** Saves the current version under `name` (names: 1..128 of `[A-Za-z0-9._-]`, else `invalid_request`). */
  async checkpoint(id: string, name: string, opts: IfVersion = {}): Promise<CheckpointSummary> {
    const got = await this.#get(id, opts.ifVersion);
    const now = new Date().toISOString();
    await this.store.putCheckpoint(this.tenant, id, name, got.capsule, {
      ...got.record.meta,
      updatedAt: now,
    });
    return { name, tokens: got.record.meta.tokens, capsuleBytes: got.capsule.length, takenAt: now };
  }

  /** Commits the checkpoint `name` as the session's next version. */
  async rewind(id: string, name: string, opts: IfVersion = {}): Promise<SessionInfo> {
    this.#checkId(id);
    if (typeof name !== "string" || !NAME_PATTERN.test(name)) throw checkpointNotFound(id, String(name));
    const ck = await this.store.getCheckpoint(this.tenant, id, name);
    if (!ck) {
      if (!(await this.store.head(this.tenant, id))) throw sessionNotFound(id);
      throw checkpointNotFound(id, name);
    }
    const m = this.capsule.model;
    if (ck.meta.model !== m.fingerprint) {
      throw new CapsuleError(
        "capsule_model_mismatch",
        `checkpoint ${JSON.stringify(name)} was produced by another model; this memory runs ${m.id}`,
      );
    }
    const head = await this.store.head(this.tenant, id);
    if (opts.ifVersion !== undefined && head?.version !== opts.ifVersion) {
      throw ifVersionConflict(id, opts.ifVersion, head?.version ?? null);
    }
    const now = new Date().toISOString();
    const meta: SessionMeta = {
      model: ck.meta.model,
      tokens: ck.meta.tokens,
      createdAt: head?.meta.createdAt ?? ck.meta.createdAt,
      updatedAt: now,
    };
    const parent = head ? head.meta.parent : ck.meta.parent;
    if (parent !== undefined) meta.parent = parent;
    const labels = head ? head.meta.labels : ck.meta.labels;
    if (labels) meta.labels = { ...labels };
    try {
      return sessionInfo(
        await this.store.commit(this.tenant, id, ck.capsule, meta, head ? head.version : null),
      );
    } catch (e) {
      if (e instanceof CapsuleError && e.code === "version_conflict") {
        throw ifVersionConflict(id, head?.version ?? 0, (e.details?.current ?? null) as number | null);
      }
      throw e;
    }
  }

  /** The session's checkpoints, sorted by name (`session_not_found` when the session is absent). */
  async checkpoints(id: string): Promise<CheckpointSummary[]> {
    this.#checkId(id);
    if (!(await this.store.head(this.tenant, id))) throw sessionNotFound(id);
    const list = await this.store.listCheckpoints(this.tenant, id);
    return list.map((c) => ({
      name: c.name,
      tokens: c.meta.tokens,
      capsuleBytes: c.capsuleBytes,
      takenAt: c.meta.updatedAt,
    }));
  }

  /** A checkpoint's capsule bytes (to move it elsewhere); `checkpoint_not_found` when absent. */
  async checkpointCapsule(
    id: string,
    name: string,
  ): Promise<{ checkpoint: CheckpointSummary; capsule: Uint8Array }> {
    this.#checkId(id);
    if (typeof name !== "string" || !NAME_PATTERN.test(name)) throw checkpointNotFound(id, String(name));
    const ck = await this.store.getCheckpoint(this.tenant, id, name);
    if (!ck) {
      if (!(await this.store.head(this.tenant, id))) throw sessionNotFound(id);
      throw checkpointNotFound(id, name);
    }
    return {
      checkpoint: {
        name,
        tokens: ck.meta.tokens,
        capsuleBytes: ck.capsule.length,
        takenAt: ck.meta.updatedAt,
      },
      capsule: ck.capsule,
    };
  }

  /** Deletes one checkpoint (`checkpoint_not_found` when absent). */
  async deleteCheckpoint(id: string, name: string): Promise<void> {
    this.#checkId(id);
    if (typeof name !== "string" || !NAME_PATTERN.test(name)) throw checkpointNotFound(id, String(name));
    if (!(await this.store.deleteCheckpoint(this.tenant, id, name))) throw checkpointNotFound(id, name);
  }

  /** Stored sessions of this tenant, sorted by id. */
  async list(opts: ListSessionsOptions = {}): Promise<SessionList> {
    const page = await this.store.list(this.tenant, opts);
    return {
      sessions: page.records.map((r) => this.#summary(r)),
      ...(page.cursor !== undefined ? { cursor: page.cursor } : {}),
    };
  }

  /** One stored session. */
  async info(id: string): Promise<SessionSummary> {
    this.#checkId(id);
    const rec = await this.store.head(this.tenant, id);
    if (!rec) throw sessionNotFound(id);
    return this.#summary(rec);
  }

  /** Deletes a session and its checkpoints. */
  async delete(id: string, opts: IfVersion = {}): Promise<void> {
    this.#checkId(id);
    if (await this.store.delete(this.tenant, id, opts.ifVersion)) return;
    const rec = await this.store.head(this.tenant, id);
    if (!rec) throw sessionNotFound(id);
    throw ifVersionConflict(id, opts.ifVersion ?? rec.version, rec.version);
  }
}
