/**
 * Sessions as the service sees them: loaded from the shared store (or this node's cache of the
 * same version), run on the engine, and committed back with compare-and-set on the version they
 * were loaded at. A node keeps nothing that only it knows: the cache is only a copy of committed
 * versions, checked against the store's current version before use.
 * @module
 */
import type { Engine } from "../engine/engine.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import { encodeCapsuleBytes } from "../capsule/encode.ts";
import { decodeCapsule, type DecodedCapsule, numericsChangedFrom } from "../capsule/decode.ts";
import type { NumericsDiff, NumericsProfile } from "../capsule/numerics.ts";
import type { SealOptions } from "../capsule/seal.ts";
import type { SessionMeta, SessionRecord, SessionStore } from "../store/types.ts";
import { ifVersionConflict, NAME_PATTERN, sessionNotFound } from "../store/validate.ts";
import { CapsuleError, isCapsuleError } from "../errors.ts";
import { SnapshotCache } from "../capsule/snapshot_cache.ts";

export { SnapshotCache };
import type { Metrics } from "./metrics.ts";

/** A session version with its decoded state. */
export interface LoadedSession {
  record: SessionRecord;
  snapshot: SessionSnapshot;
  /**
   * How the arithmetic that produced this state differs from this node's (`[capsule, node]` per
   * key; the capsule side null for a capsule that records none), or null when they are equal: then
   * the session continues with exactly the tokens it would have produced where it was.
   */
  numericsChanged: NumericsDiff | null;
}

/** Random session ids: `ses_` and 24 base-32 characters (120 bits). */
export function newSessionId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return "ses_" + Array.from(bytes, (b) => alphabet[b & 31]).join("");
}

/** Options of {@link SessionService}. */
export interface SessionServiceOptions {
  engine: Engine;
  store: SessionStore;
  metrics: Metrics;
  cache?: SnapshotCache;
  /** Largest capsule accepted on import. */
  maxCapsuleBytes: number;
}

/** Load, encode, decode and commit sessions for one model. */
export class SessionService {
  readonly engine: Engine;
  readonly store: SessionStore;
  readonly #metrics: Metrics;
  readonly #cache: SnapshotCache;
  readonly #maxCapsuleBytes: number;

  constructor(opts: SessionServiceOptions) {
    this.engine = opts.engine;
    this.store = opts.store;
    this.#metrics = opts.metrics;
    this.#cache = opts.cache ?? new SnapshotCache();
    this.#maxCapsuleBytes = opts.maxCapsuleBytes;
  }

  /** Checks a session id from a URL: one that cannot exist is simply not found. */
  checkId(id: string): void {
    if (!NAME_PATTERN.test(id)) throw sessionNotFound(id);
  }

  /** The current record; `session_not_found` when absent, `version_conflict` when not at `ifVersion`. */
  async head(tenant: string, id: string, ifVersion?: number): Promise<SessionRecord> {
    this.checkId(id);
    const rec = await this.store.head(tenant, id);
    if (!rec) throw sessionNotFound(id);
    if (ifVersion !== undefined && rec.version !== ifVersion) {
      this.#metrics.conflicts.inc();
      throw ifVersionConflict(id, ifVersion, rec.version);
    }
    return rec;
  }

  /**
   * The current version with its state. The cache answers when the store's current version is
   * the cached one; otherwise the capsule is read and decoded.
   */
  async load(tenant: string, id: string, ifVersion?: number): Promise<LoadedSession> {
    this.checkId(id);
    if (this.#cache.has(tenant, id)) {
      const record = await this.head(tenant, id, ifVersion);
      const snapshot = this.#cache.get(tenant, id, record);
      if (snapshot) {
        this.#metrics.resumes.inc({ source: "cache" });
        return { record, snapshot, numericsChanged: numericsChangedFrom(snapshot, this.engine.numerics) };
      }
    }
    const got = await this.store.get(tenant, id);
    if (!got) throw sessionNotFound(id);
    if (ifVersion !== undefined && got.record.version !== ifVersion) {
      this.#metrics.conflicts.inc();
      throw ifVersionConflict(id, ifVersion, got.record.version);
    }
    const snapshot = await this.decodeStored(got.capsule, id);
    this.#cache.put(tenant, id, got.record, snapshot, got.capsule.length);
    this.#metrics.resumes.inc({ source: "store" });
    return {
      record: got.record,
      snapshot,
      numericsChanged: numericsChangedFrom(snapshot, this.engine.numerics),
    };
  }

  /** The stored capsule bytes of the current version. */
  async capsule(tenant: string, id: string): Promise<{ record: SessionRecord; capsule: Uint8Array }> {
    this.checkId(id);
    const got = await this.store.get(tenant, id);
    if (!got) throw sessionNotFound(id);
    return got;
  }

  /**
   * Encodes a snapshot as this node stores it: exact f32 state, unsealed (the store is trusted),
   * recording the numerics that produced it (this node's unless `numerics` says otherwise, e.g. a
   * stored capsule re-sealed for export; null records none).
   */
  encode(
    snapshot: SessionSnapshot,
    seal?: SealOptions,
    numerics: NumericsProfile | null = this.engine.numerics,
  ): Promise<Uint8Array> {
    const m = this.engine.model;
    return encodeCapsuleBytes(snapshot, {
      fingerprint: m.fingerprint,
      config: m.config,
      ...(seal ? { seal } : {}),
      ...(numerics ? { numerics } : {}),
    });
  }

  /** Counts a decoded state that other numerics than this node's produced. */
  #count(snapshot: DecodedCapsule, source: "store" | "import"): DecodedCapsule {
    if (numericsChangedFrom(snapshot, this.engine.numerics)) this.#metrics.numericsChanges.inc({ source });
    return snapshot;
  }

  /** Decodes a capsule from the store; a capsule this model cannot resume is reported, not hidden. */
  async decodeStored(capsule: Uint8Array, id: string): Promise<DecodedCapsule> {
    const m = this.engine.model;
    try {
      return this.#count(
        await decodeCapsule(capsule, { fingerprint: m.fingerprint, config: m.config }),
        "store",
      );
    } catch (e) {
      if (isCapsuleError(e) && e.code === "capsule_model_mismatch") {
        throw new CapsuleError(
          "capsule_model_mismatch",
          `session ${JSON.stringify(id)} was produced by another model; this node serves ${m.id}`,
        );
      }
      throw e;
    }
  }

  /**
   * Decodes a capsule a client uploaded: every capsule check, then the engine's own check that the
   * state can be resumed. `seal` is required when the node seals capsules.
   */
  async decodeUpload(capsule: Uint8Array, seal?: SealOptions): Promise<DecodedCapsule> {
    const m = this.engine.model;
    const snapshot = await decodeCapsule(capsule, {
      fingerprint: m.fingerprint,
      config: m.config,
      maxBytes: this.#maxCapsuleBytes,
      ...(seal ? { seal } : {}),
    });
    this.engine.restore(snapshot); // throws state_mismatch / invalid_token_id on a state it cannot run
    return this.#count(snapshot, "import");
  }

  /**
   * Commits a new version: `base` is the record it was loaded from (null to create). Conflicts are
   * `version_conflict` with the current version. `capsule` may be given when already encoded.
   */
  async commit(
    tenant: string,
    id: string,
    snapshot: SessionSnapshot,
    base: SessionRecord | null,
    extra: { parent?: string; capsule?: Uint8Array; numerics?: NumericsProfile | null } = {},
  ): Promise<SessionRecord> {
    const bytes = extra.capsule ?? await this.encode(snapshot, undefined, extra.numerics);
    const now = new Date().toISOString();
    const meta: SessionMeta = {
      model: this.engine.model.fingerprint,
      tokens: snapshot.tokens.length,
      createdAt: base?.meta.createdAt ?? now,
      updatedAt: now,
    };
    const parent = extra.parent ?? base?.meta.parent;
    if (parent !== undefined) meta.parent = parent;
    if (base?.meta.labels) meta.labels = { ...base.meta.labels };
    let record: SessionRecord;
    try {
      record = await this.store.commit(tenant, id, bytes, meta, base ? base.version : null);
    } catch (e) {
      if (isCapsuleError(e, "version_conflict")) {
        this.#metrics.conflicts.inc();
        const current = (e.details?.current ?? null) as number | null;
        if (base === null) {
          throw new CapsuleError("version_conflict", `session ${JSON.stringify(id)} already exists`, {
            current,
          });
        }
        throw ifVersionConflict(id, base.version, current);
      }
      throw e;
    }
    this.#metrics.capsuleBytes.observe({ op: "commit" }, bytes.length);
    this.#cache.put(tenant, id, record, snapshot, bytes.length);
    return record;
  }

  /** Deletes a session (optionally only at `ifVersion`); `session_not_found` when absent. */
  async delete(tenant: string, id: string, ifVersion?: number): Promise<void> {
    this.checkId(id);
    this.#cache.delete(tenant, id);
    const deleted = await this.store.delete(tenant, id, ifVersion);
    if (deleted) return;
    const rec = await this.store.head(tenant, id);
    if (!rec) throw sessionNotFound(id);
    this.#metrics.conflicts.inc();
    throw ifVersionConflict(id, ifVersion ?? rec.version, rec.version);
  }
}
