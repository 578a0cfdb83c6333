/**
 * The contract every session store implements (memory, Deno KV, Redis), so the service can run
 * against any of them and one conformance suite (tests/store/conformance.ts) can check them all.
 * @module
 */

/** What a store knows about a session besides its capsule bytes. */
export interface SessionMeta {
  /** Fingerprint of the model the capsule was produced by. */
  model: string;
  /** Tokens consumed by the session so far. */
  tokens: number;
  /** ISO-8601 time the session was created. */
  createdAt: string;
  /** ISO-8601 time of this version. */
  updatedAt: string;
  /** Id of the session this one was forked from, if any. */
  parent?: string;
  /** Free-form string labels. */
  labels?: Record<string, string>;
}

/** One committed version of a session, without its capsule. */
export interface SessionRecord {
  tenant: string;
  id: string;
  /** 1 on create, +1 on every commit. */
  version: number;
  meta: SessionMeta;
  /** Length of the stored capsule in bytes. */
  capsuleBytes: number;
}

/** A named checkpoint of a session, without its capsule. */
export interface CheckpointInfo {
  name: string;
  meta: SessionMeta;
  capsuleBytes: number;
}

/** Options for {@linkcode SessionStore.list}. */
export interface ListOptions {
  /** Only ids starting with this string. */
  prefix?: string;
  /** Page size, 1..1000 (default 100). */
  limit?: number;
  /** Opaque cursor from a previous page's result. */
  cursor?: string;
}

/** One page of {@linkcode SessionStore.list}: records sorted by id; `cursor` set when more follow. */
export interface ListPage {
  records: SessionRecord[];
  cursor?: string;
}

/**
 * Durable, versioned storage of session capsules, partitioned by tenant.
 *
 * Every method validates tenant, id and checkpoint names (1..128 chars of `[A-Za-z0-9._-]`)
 * and rejects anything else with `invalid_request`. Bytes are copied in and out: mutating an
 * argument or a result never changes what is stored. Connection problems are `store_unavailable`.
 */
export interface SessionStore {
  /** Metadata + version, no capsule. null when absent. */
  head(tenant: string, id: string): Promise<SessionRecord | null>;
  /** Capsule bytes + record of one consistent version. null when absent. */
  get(tenant: string, id: string): Promise<{ record: SessionRecord; capsule: Uint8Array } | null>;
  /**
   * Compare-and-set commit. `expectedVersion` null = create (must not exist), a number = the
   * session must currently be at that version. Returns the new record (version = old + 1, or 1 on
   * create). A mismatch throws `CapsuleError("version_conflict", …, { current: number | null })`.
   * All or nothing: a reader never sees a half-written capsule, and a failed or crashed commit
   * leaves the previous version intact.
   */
  commit(
    tenant: string,
    id: string,
    capsule: Uint8Array,
    meta: SessionMeta,
    expectedVersion: number | null,
  ): Promise<SessionRecord>;
  /**
   * Deletes a session and its checkpoints; when `expectedVersion` is given, only if the session is
   * at that version. Returns whether a session was deleted.
   */
  delete(tenant: string, id: string, expectedVersion?: number): Promise<boolean>;
  /** Sessions of one tenant, sorted by id, paginated. */
  list(tenant: string, opts?: ListOptions): Promise<ListPage>;
  /**
   * Stores an immutable copy of a capsule under `name` (the agent sidecar's checkpoint/rewind).
   * Later commits to the session do not change it; a put under an existing name replaces that
   * checkpoint as a whole. The session itself need not exist.
   */
  putCheckpoint(
    tenant: string,
    id: string,
    name: string,
    capsule: Uint8Array,
    meta: SessionMeta,
  ): Promise<void>;
  /** A checkpoint's capsule and meta; null when absent. */
  getCheckpoint(
    tenant: string,
    id: string,
    name: string,
  ): Promise<{ capsule: Uint8Array; meta: SessionMeta } | null>;
  /** A session's checkpoints sorted by name. */
  listCheckpoints(tenant: string, id: string): Promise<CheckpointInfo[]>;
  /** Deletes one checkpoint; returns whether it existed. */
  deleteCheckpoint(tenant: string, id: string, name: string): Promise<boolean>;
  /** Releases connections and handles; later calls fail with `store_unavailable`. Idempotent. */
  close(): Promise<void>;
}
