/**
 * Session store on Deno KV (the embedded default; needs `--unstable-kv`).
 *
 * Deno KV limits a value to 64 KiB and one atomic operation to 1000 mutations / 800 KiB, so a
 * capsule cannot be written in one atomic. Instead:
 *
 * 1. The capsule is written as chunks under a fresh, never reused blob id
 *    (`[root, "blob", tenant, id, blobId, i]`), in batches, together with a "pending" marker that
 *    says the blob is not referenced yet.
 * 2. One atomic operation then checks that the head record is still the one whose version was
 *    expected (by versionstamp) and that the marker is intact, writes the new head
 *    `{version, blob, chunks, bytes, meta}`, deletes the new blob's marker and marks the previous
 *    blob dead.
 * 3. After success the previous blob is deleted; on conflict the new blob is.
 *
 * Why this is all or nothing: readers only reach chunks through the head record, and the head
 * changes in exactly one atomic step from one complete blob to another complete blob. A crash
 * before step 2 leaves the old head (and its blob) untouched plus an unreferenced pending blob; a
 * crash after it leaves the new head complete plus an old blob marked dead. Leftover blobs are only
 * garbage, which {@linkcode KvStore.sweepOrphans} removes. Readers that lose a race with step 3
 * (the blob they were reading is deleted under them) notice the gap and retry from the head.
 *
 * Checkpoints use the same scheme with `[root, "ckpt", tenant, id, name]` as their "head".
 * @module
 */
import { CapsuleError } from "../errors.ts";
import type {
  CheckpointInfo,
  ListOptions,
  ListPage,
  SessionMeta,
  SessionRecord,
  SessionStore,
} from "./types.ts";
import {
  asStoreError,
  checkCapsule,
  checkExpectedVersion,
  checkListOptions,
  checkMeta,
  checkName,
  closedError,
  copyMeta,
  prefixEnd,
  versionConflict,
} from "./validate.ts";

/** Largest value Deno KV stores. */
const MAX_CHUNK = 65536;
/** Chunks per atomic write: 10 × 64 KiB stays under the 800 KiB per-operation limit. */
const CHUNKS_PER_BATCH = 10;
/** Deletes per atomic operation (limit 1000 mutations). */
const DELETES_PER_BATCH = 500;
/**
 * A write that SQLite refused because another handle on the same file held its write lock
 * ("database is locked"; seen with two handles racing commits). Such an attempt applied nothing.
 */
function isBusy(e: unknown): boolean {
  return e instanceof Error && /database is locked|SQLITE_BUSY/i.test(e.message);
}

/** Attempts of one write while the file is locked by another handle (about 2 s in all). */
const BUSY_ATTEMPTS = 50;

/** Runs one atomic write, again while another handle holds the file's write lock. */
async function whileBusy<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await write();
    } catch (e) {
      if (!isBusy(e) || attempt >= BUSY_ATTEMPTS) throw e;
      await new Promise((r) => setTimeout(r, Math.min(50, 2 ** attempt) * (0.5 + Math.random())));
    }
  }
}

/** Times a read or a compare-and-set restarts after losing a race before giving up. */
const MAX_ATTEMPTS = 32;

/** Where a capsule's chunks live. */
interface BlobRef {
  blob: string;
  chunks: number;
  bytes: number;
}
interface HeadValue extends BlobRef {
  version: number;
  meta: SessionMeta;
}
interface CheckpointValue extends BlobRef {
  meta: SessionMeta;
}
interface PendingValue {
  /** When the blob write started (ms since epoch). */
  since: number;
  /** True once the blob is known to be unreferenced (replaced, deleted or lost a conflict). */
  dead: boolean;
}

/** A blob written by {@linkcode KvStore.stageBlob} and not yet referenced by any head. */
export interface StagedBlob extends BlobRef {
  /** Versionstamp of the pending marker; the referencing commit checks it is unchanged. */
  marker: string;
}

/** Test-only interception points (default: none). */
export interface KvStoreHooks {
  /** Runs after a reader has read a head record and before it reads the chunks. */
  afterHeadRead?: () => Promise<void>;
  /** Runs after a commit has written its blob and before it swaps the head. */
  afterBlobWrite?: () => Promise<void>;
  /** Runs before an unreferenced blob is deleted; throwing simulates a crash at that point. */
  beforeBlobDelete?: () => Promise<void>;
}

/** Options of {@linkcode KvStore}. */
export interface KvStoreOptions {
  /** Chunk size in bytes, 1..65536 (default 65536); smaller values exercise chunking in tests. */
  chunkSize?: number;
  /** First key part of everything this store writes (default "capsule"). */
  root?: string;
  /** Test-only hooks. */
  hooks?: KvStoreHooks;
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A {@linkcode SessionStore} on a `Deno.Kv` database. */
export class KvStore implements SessionStore {
  readonly #kv: Deno.Kv;
  readonly #chunk: number;
  readonly #root: string;
  readonly #hooks: KvStoreHooks;
  #closed = false;

  /** Wraps an open database; the store owns it and closes it in {@linkcode close}. */
  constructor(kv: Deno.Kv, opts: KvStoreOptions = {}) {
    const chunk = opts.chunkSize ?? MAX_CHUNK;
    if (!Number.isSafeInteger(chunk) || chunk < 1 || chunk > MAX_CHUNK) {
      throw new CapsuleError("invalid_argument", `kv chunkSize must be an integer in 1..${MAX_CHUNK}`);
    }
    this.#kv = kv;
    this.#chunk = chunk;
    this.#root = opts.root ?? "capsule";
    this.#hooks = opts.hooks ?? {};
  }

  // ---- keys ----
  #headKey(t: string, id: string): Deno.KvKey {
    return [this.#root, "head", t, id];
  }
  #blobPrefix(t: string, id: string, blob: string): Deno.KvKey {
    return [this.#root, "blob", t, id, blob];
  }
  #pendingKey(t: string, id: string, blob: string): Deno.KvKey {
    return [this.#root, "pending", t, id, blob];
  }
  #ckptKey(t: string, id: string, name: string): Deno.KvKey {
    return [this.#root, "ckpt", t, id, name];
  }

  /** Runs `fn` on the open database, mapping backend failures to `store_unavailable`. */
  async #run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw closedError("kv");
    try {
      return await fn();
    } catch (e) {
      throw asStoreError(e, "kv", op);
    }
  }

  // ---- blobs ----

  /**
   * Writes `capsule` as a new unreferenced blob of session `tenant/id` (step 1 of a commit).
   * @internal Exposed so tests can simulate a crash between the blob write and the head commit.
   */
  stageBlob(tenant: string, id: string, capsule: Uint8Array): Promise<StagedBlob> {
    return this.#run("stage blob", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      return await this.#writeBlob(tenant, id, checkCapsule(capsule));
    });
  }

  async #writeBlob(t: string, id: string, bytes: Uint8Array): Promise<StagedBlob> {
    const blob = crypto.randomUUID();
    const chunks = Math.ceil(bytes.length / this.#chunk);
    const prefix = this.#blobPrefix(t, id, blob);
    let marker = "";
    // The marker goes in the first batch so that even a crash mid-write leaves a sweepable blob.
    for (let first = 0; first === 0 || first < chunks; first += CHUNKS_PER_BATCH) {
      const res = await whileBusy(() => {
        const op = this.#kv.atomic();
        if (first === 0) {
          op.set(this.#pendingKey(t, id, blob), { since: Date.now(), dead: false } satisfies PendingValue);
        }
        for (let i = first; i < Math.min(chunks, first + CHUNKS_PER_BATCH); i++) {
          // slice copies, so later changes to the caller's array cannot reach the store.
          op.set([...prefix, i], bytes.slice(i * this.#chunk, (i + 1) * this.#chunk));
        }
        return op.commit();
      });
      if (!res.ok) throw new CapsuleError("store_unavailable", "kv store: blob write was rejected");
      if (first === 0) marker = res.versionstamp;
    }
    return { blob, chunks, bytes: bytes.length, marker };
  }

  /** Reads a blob; null when any chunk is missing (it was deleted by a newer commit). */
  async #readBlob(t: string, id: string, ref: BlobRef): Promise<Uint8Array | null> {
    const out = new Uint8Array(ref.bytes);
    let next = 0;
    let offset = 0;
    const it = this.#kv.list<Uint8Array>({ prefix: this.#blobPrefix(t, id, ref.blob) }, { batchSize: 64 });
    for await (const e of it) {
      const i = e.key[e.key.length - 1];
      const v = e.value;
      if (i !== next || !(v instanceof Uint8Array) || offset + v.length > out.length) return null;
      out.set(v, offset);
      offset += v.length;
      next++;
    }
    return next === ref.chunks && offset === ref.bytes ? out : null;
  }

  /** Deletes a blob and then its marker (so an interrupted delete stays sweepable). */
  async #deleteBlob(t: string, id: string, blob: string, chunks?: number): Promise<void> {
    await this.#hooks.beforeBlobDelete?.();
    const prefix = this.#blobPrefix(t, id, blob);
    let keys: Deno.KvKey[];
    if (chunks !== undefined) {
      keys = Array.from({ length: chunks }, (_, i) => [...prefix, i]);
    } else {
      keys = [];
      for await (const e of this.#kv.list({ prefix })) keys.push(e.key);
    }
    for (let i = 0; i < keys.length; i += DELETES_PER_BATCH) {
      await whileBusy(() => {
        const op = this.#kv.atomic();
        for (const k of keys.slice(i, i + DELETES_PER_BATCH)) op.delete(k);
        return op.commit();
      });
    }
    await whileBusy(() => this.#kv.delete(this.#pendingKey(t, id, blob)));
  }

  /**
   * Removes the entry `cur` (a head or a checkpoint) if it is unchanged, marking its blob dead in
   * the same write, so the blob is known garbage even if deleting it is interrupted.
   */
  #retire(
    cur: Deno.AtomicCheck,
    t: string,
    id: string,
    blob: string,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return whileBusy(() =>
      this.#kv.atomic()
        .check(cur)
        .delete(cur.key)
        .set(this.#pendingKey(t, id, blob), { since: 0, dead: true } satisfies PendingValue)
        .commit()
    );
  }

  /** Deletes a blob whose marker says dead; failures leave it to {@linkcode sweepOrphans}. */
  async #dropBlob(t: string, id: string, ref: BlobRef): Promise<void> {
    try {
      await this.#deleteBlob(t, id, ref.blob, ref.chunks);
    } catch {
      // Garbage only: the dead marker lets sweepOrphans finish the job.
    }
  }

  /** Reads the value under `key` and then the blob it references, retrying while commits race. */
  async #readVia<V extends BlobRef>(
    t: string,
    id: string,
    key: Deno.KvKey,
  ): Promise<{ value: V; bytes: Uint8Array } | null> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const h = await this.#kv.get<V>(key);
      if (h.value === null) return null;
      await this.#hooks.afterHeadRead?.();
      const bytes = await this.#readBlob(t, id, h.value);
      if (bytes) return { value: h.value, bytes };
      const again = await this.#kv.get<V>(key);
      if (again.versionstamp === h.versionstamp) {
        throw new CapsuleError(
          "internal",
          `kv store: blob of ${JSON.stringify(key)} is incomplete (store damaged)`,
        );
      }
    }
    throw new CapsuleError(
      "store_unavailable",
      `kv store: ${JSON.stringify(key)} changed ${MAX_ATTEMPTS} times while being read`,
    );
  }

  /**
   * Points `key` at a staged blob with one atomic compare-and-set, then deletes the blob it replaced.
   * `accept` decides, from the current value, whether the swap may happen (else it throws).
   * The staged blob is discarded when the swap does not happen.
   */
  async #swap<V extends BlobRef>(
    t: string,
    id: string,
    key: Deno.KvKey,
    staged: StagedBlob,
    accept: (cur: V | null) => V,
  ): Promise<V> {
    let done = false;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const cur = await this.#kv.get<V>(key);
        const next = accept(cur.value);
        const res = await whileBusy(() => {
          const op = this.#kv.atomic()
            .check(cur)
            .check({ key: this.#pendingKey(t, id, staged.blob), versionstamp: staged.marker })
            .set(key, next)
            .delete(this.#pendingKey(t, id, staged.blob));
          if (cur.value) {
            op.set(this.#pendingKey(t, id, cur.value.blob), { since: 0, dead: true } satisfies PendingValue);
          }
          return op.commit();
        });
        if (res.ok) {
          done = true;
          if (cur.value) await this.#dropBlob(t, id, cur.value);
          return next;
        }
        const marker = await this.#kv.get(this.#pendingKey(t, id, staged.blob));
        if (marker.versionstamp !== staged.marker) {
          throw new CapsuleError(
            "store_unavailable",
            "kv store: staged blob was swept before it could be committed",
          );
        }
        // Otherwise the value changed under us: re-read and let `accept` judge the new one.
      }
      throw new CapsuleError(
        "store_unavailable",
        `kv store: ${JSON.stringify(key)} kept changing during commit`,
      );
    } finally {
      if (!done) await this.#dropBlob(t, id, staged);
    }
  }

  // ---- SessionStore ----

  head(tenant: string, id: string): Promise<SessionRecord | null> {
    return this.#run("head", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      const h = await this.#kv.get<HeadValue>(this.#headKey(tenant, id));
      return h.value ? this.#record(tenant, id, h.value) : null;
    });
  }

  #record(tenant: string, id: string, h: HeadValue): SessionRecord {
    return { tenant, id, version: h.version, meta: copyMeta(h.meta), capsuleBytes: h.bytes };
  }

  get(tenant: string, id: string): Promise<{ record: SessionRecord; capsule: Uint8Array } | null> {
    return this.#run("get", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      const r = await this.#readVia<HeadValue>(tenant, id, this.#headKey(tenant, id));
      return r ? { record: this.#record(tenant, id, r.value), capsule: r.bytes } : null;
    });
  }

  commit(
    tenant: string,
    id: string,
    capsule: Uint8Array,
    meta: SessionMeta,
    expectedVersion: number | null,
  ): Promise<SessionRecord> {
    return this.#run("commit", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      checkCapsule(capsule);
      const m = checkMeta(meta);
      const expected = checkExpectedVersion(expectedVersion);
      const key = this.#headKey(tenant, id);
      // Cheap early check so that losers of an obvious conflict do not write a whole blob.
      const pre = await this.#kv.get<HeadValue>(key);
      if ((pre.value?.version ?? null) !== expected) {
        throw versionConflict(tenant, id, expected, pre.value?.version ?? null);
      }
      const staged = await this.#writeBlob(tenant, id, capsule);
      await this.#hooks.afterBlobWrite?.();
      const head = await this.#swap<HeadValue>(tenant, id, key, staged, (cur) => {
        const current = cur?.version ?? null;
        if (current !== expected) throw versionConflict(tenant, id, expected, current);
        return {
          version: (current ?? 0) + 1,
          blob: staged.blob,
          chunks: staged.chunks,
          bytes: staged.bytes,
          meta: m,
        };
      });
      return this.#record(tenant, id, head);
    });
  }

  delete(tenant: string, id: string, expectedVersion?: number): Promise<boolean> {
    return this.#run("delete", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      const expected = checkExpectedVersion(expectedVersion, true);
      const key = this.#headKey(tenant, id);
      let removed: HeadValue | null = null;
      for (let attempt = 0; attempt < MAX_ATTEMPTS && !removed; attempt++) {
        const cur = await this.#kv.get<HeadValue>(key);
        if (!cur.value || (expected !== null && cur.value.version !== expected)) return false;
        const res = await this.#retire(cur, tenant, id, cur.value.blob);
        if (res.ok) removed = cur.value;
      }
      if (!removed) {
        throw new CapsuleError("store_unavailable", `kv store: ${tenant}/${id} kept changing during delete`);
      }
      await this.#dropBlob(tenant, id, removed);
      for await (const e of this.#kv.list<CheckpointValue>({ prefix: [this.#root, "ckpt", tenant, id] })) {
        await this.#deleteCheckpointEntry(tenant, id, e.key);
      }
      return true;
    });
  }

  list(tenant: string, opts?: ListOptions): Promise<ListPage> {
    return this.#run("list", async () => {
      checkName("tenant", tenant);
      const q = checkListOptions(opts);
      // Ids never contain "\0", so `after + "\0"` is the smallest id strictly after the cursor.
      const from = q.after !== undefined && q.after + "\0" > q.prefix ? q.after + "\0" : q.prefix;
      const records: SessionRecord[] = [];
      let more = false;
      const it = this.#kv.list<HeadValue>(
        { start: this.#headKey(tenant, from), end: this.#headKey(tenant, prefixEnd(q.prefix)) },
        { limit: q.limit + 1 },
      );
      for await (const e of it) {
        if (records.length === q.limit) {
          more = true;
          break;
        }
        records.push(this.#record(tenant, e.key[e.key.length - 1] as string, e.value));
      }
      return more ? { records, cursor: records[records.length - 1].id } : { records };
    });
  }

  putCheckpoint(
    tenant: string,
    id: string,
    name: string,
    capsule: Uint8Array,
    meta: SessionMeta,
  ): Promise<void> {
    return this.#run("put checkpoint", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      checkName("checkpoint name", name);
      checkCapsule(capsule);
      const m = checkMeta(meta);
      const staged = await this.#writeBlob(tenant, id, capsule);
      await this.#swap<CheckpointValue>(tenant, id, this.#ckptKey(tenant, id, name), staged, () => ({
        blob: staged.blob,
        chunks: staged.chunks,
        bytes: staged.bytes,
        meta: m,
      }));
    });
  }

  getCheckpoint(
    tenant: string,
    id: string,
    name: string,
  ): Promise<{ capsule: Uint8Array; meta: SessionMeta } | null> {
    return this.#run("get checkpoint", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      checkName("checkpoint name", name);
      const r = await this.#readVia<CheckpointValue>(tenant, id, this.#ckptKey(tenant, id, name));
      return r ? { capsule: r.bytes, meta: copyMeta(r.value.meta) } : null;
    });
  }

  listCheckpoints(tenant: string, id: string): Promise<CheckpointInfo[]> {
    return this.#run("list checkpoints", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      const out: CheckpointInfo[] = [];
      for await (const e of this.#kv.list<CheckpointValue>({ prefix: [this.#root, "ckpt", tenant, id] })) {
        out.push({
          name: e.key[e.key.length - 1] as string,
          meta: copyMeta(e.value.meta),
          capsuleBytes: e.value.bytes,
        });
      }
      return out.sort((a, b) => byName(a.name, b.name));
    });
  }

  deleteCheckpoint(tenant: string, id: string, name: string): Promise<boolean> {
    return this.#run("delete checkpoint", async () => {
      checkName("tenant", tenant);
      checkName("session id", id);
      checkName("checkpoint name", name);
      return await this.#deleteCheckpointEntry(tenant, id, this.#ckptKey(tenant, id, name));
    });
  }

  async #deleteCheckpointEntry(t: string, id: string, key: Deno.KvKey): Promise<boolean> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const cur = await this.#kv.get<CheckpointValue>(key);
      if (!cur.value) return false;
      const res = await this.#retire(cur, t, id, cur.value.blob);
      if (res.ok) {
        await this.#dropBlob(t, id, cur.value);
        return true;
      }
    }
    throw new CapsuleError("store_unavailable", `kv store: checkpoint ${JSON.stringify(key)} kept changing`);
  }

  /**
   * Deletes garbage blobs: those marked dead (replaced or deleted, their deletion interrupted) and
   * pending ones whose write started more than `olderThanMs` ago (a writer that crashed before
   * committing). A writer still alive past that age finds its blob gone and fails its commit with
   * `store_unavailable` rather than referencing a swept blob. Returns how many blobs were removed.
   */
  sweepOrphans(olderThanMs = 60 * 60 * 1000): Promise<number> {
    return this.#run("sweep", async () => {
      const cutoff = Date.now() - olderThanMs;
      let removed = 0;
      for await (const e of this.#kv.list<PendingValue>({ prefix: [this.#root, "pending"] })) {
        if (!e.value.dead && e.value.since > cutoff) continue;
        const [, , t, id, blob] = e.key as [string, string, string, string, string];
        if (!e.value.dead) {
          // Mark it dead first: the owning writer's commit checks the marker and will now fail.
          const res = await whileBusy(() =>
            this.#kv.atomic()
              .check(e)
              .set(e.key, { since: e.value.since, dead: true } satisfies PendingValue)
              .commit()
          );
          if (!res.ok) continue;
        }
        await this.#deleteBlob(t, id, blob);
        removed++;
      }
      return removed;
    });
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#kv.close();
    }
    return Promise.resolve();
  }
}

/** Opens (creating when needed) a Deno KV database at `path` (":memory:" for a throwaway one). */
export async function openKvStore(path: string, opts: KvStoreOptions = {}): Promise<KvStore> {
  let kv: Deno.Kv;
  try {
    if (path !== ":memory:") {
      const slash = path.lastIndexOf("/");
      if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
    }
    kv = await Deno.openKv(path);
  } catch (e) {
    throw new CapsuleError(
      "store_unavailable",
      `kv store: cannot open ${JSON.stringify(path)}: ${e instanceof Error ? e.message : String(e)}`,
      { backend: "kv" },
      { cause: e },
    );
  }
  try {
    return new KvStore(kv, opts);
  } catch (e) {
    kv.close();
    throw e;
  }
}
