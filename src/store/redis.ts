/**
 * Session store on Redis (shared by every node of a cluster), through `ioredis`.
 *
 * Layout, with namespace N (default "capsule") and the tenant T as a hash tag so that all of a
 * tenant's keys live in one cluster slot:
 * - `N:{T}:s:<id>`  hash `v` version, `m` meta JSON, `b` capsule length, `d` capsule bytes
 * - `N:{T}:idx`     sorted set of the tenant's session ids (all score 0: ordered by id, for list)
 * - `N:{T}:ck:<id>` hash checkpoint name → `{meta, bytes}` JSON
 * - `N:{T}:cd:<id>` hash checkpoint name → capsule bytes
 * Tenants, ids and names are validated to `[A-Za-z0-9._-]`, so they can never contain the `:`,
 * `{` or `}` that structure the keys.
 *
 * Commits are one Lua script (check version, write the whole hash, index the id), which Redis
 * runs atomically: all or nothing, and of racing commits on one version exactly one wins. Reads
 * are single commands (or MULTI blocks), so they see one consistent version.
 * @module
 */
import { Buffer } from "node:buffer";
import { Redis } from "ioredis";
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
  checkCapsule,
  checkExpectedVersion,
  checkListOptions,
  checkMeta,
  checkName,
  closedError,
  copyMeta,
  NAME_PATTERN,
  prefixEnd,
  versionConflict,
} from "./validate.ts";

/** Largest bulk string Redis accepts by default (`proto-max-bulk-len`, 512 MiB). */
export const REDIS_MAX_VALUE_BYTES = 512 * 1024 * 1024;

/** Options of {@linkcode openRedisStore}. */
export interface RedisStoreOptions {
  /** Key namespace (default "capsule"); stores with different namespaces never see each other. */
  namespace?: string;
  /** TCP connect timeout (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Per-command timeout; default none (large capsules take time to transfer). */
  commandTimeoutMs?: number;
  /** Largest capsule accepted (default {@linkcode REDIS_MAX_VALUE_BYTES}); larger → `capsule_too_large`. */
  maxCapsuleBytes?: number;
}

/** Check the version, then write the whole session hash and index its id. */
const COMMIT_LUA = `
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if cur then return {0, tonumber(cur)} end
elseif cur ~= ARGV[1] then
  if cur then return {0, tonumber(cur)} end
  return {0, -1}
end
local v = (cur and tonumber(cur) or 0) + 1
redis.call('HSET', KEYS[1], 'v', tostring(v), 'm', ARGV[2], 'b', ARGV[3], 'd', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[5])
return {1, v}
`;

/** Delete a session (if at the expected version) with its checkpoints and index entry. */
const DELETE_LUA = `
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur then return 0 end
if ARGV[1] ~= '' and cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`;

type CapsuleRedis = Redis & {
  capsuleCommit(
    session: string,
    index: string,
    expected: string,
    meta: string,
    bytes: string,
    capsule: Uint8Array,
    id: string,
  ): Promise<[number, number]>;
  capsuleDelete(
    session: string,
    index: string,
    ck: string,
    cd: string,
    expected: string,
    id: string,
  ): Promise<number>;
};

function parseMeta(json: string): SessionMeta {
  return JSON.parse(json) as SessionMeta;
}

function toBytes(b: Uint8Array): Uint8Array {
  // ioredis returns Node Buffers, often views into a shared pool: copy into a plain Uint8Array.
  return new Uint8Array(b);
}

/** A {@linkcode SessionStore} on a Redis server. */
export class RedisStore implements SessionStore {
  readonly #redis: CapsuleRedis;
  readonly #ns: string;
  readonly #maxBytes: number;
  readonly #where: string;
  #closed = false;

  /** Use {@linkcode openRedisStore}, which connects and checks the server first. */
  constructor(redis: Redis, where: string, opts: RedisStoreOptions = {}) {
    const ns = opts.namespace ?? "capsule";
    if (!NAME_PATTERN.test(ns)) {
      throw new CapsuleError(
        "invalid_store_url",
        `redis namespace ${JSON.stringify(ns)} must match [A-Za-z0-9._-]{1,128}`,
      );
    }
    this.#ns = ns;
    this.#maxBytes = opts.maxCapsuleBytes ?? REDIS_MAX_VALUE_BYTES;
    this.#where = where;
    redis.defineCommand("capsuleCommit", { numberOfKeys: 2, lua: COMMIT_LUA });
    redis.defineCommand("capsuleDelete", { numberOfKeys: 4, lua: DELETE_LUA });
    this.#redis = redis as CapsuleRedis;
  }

  #key(t: string, kind: string, id?: string): string {
    return id === undefined ? `${this.#ns}:{${t}}:${kind}` : `${this.#ns}:{${t}}:${kind}:${id}`;
  }

  async #run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw closedError("redis");
    try {
      return await fn();
    } catch (e) {
      if (e instanceof CapsuleError) throw e;
      const why = e instanceof Error ? e.message : String(e);
      throw new CapsuleError("store_unavailable", `redis store (${this.#where}): ${op} failed: ${why}`, {
        backend: "redis",
      }, { cause: e });
    }
  }

  #ids(tenant: string, id: string): void {
    checkName("tenant", tenant);
    checkName("session id", id);
  }

  #capsule(capsule: unknown): Uint8Array {
    const c = checkCapsule(capsule);
    if (c.length > this.#maxBytes) {
      throw new CapsuleError(
        "capsule_too_large",
        `capsule of ${c.length} bytes exceeds the redis store limit of ${this.#maxBytes} bytes`,
        { bytes: c.length, limit: this.#maxBytes },
      );
    }
    return c;
  }

  head(tenant: string, id: string): Promise<SessionRecord | null> {
    return this.#run("head", async () => {
      this.#ids(tenant, id);
      const [v, m, b] = await this.#redis.hmget(this.#key(tenant, "s", id), "v", "m", "b");
      if (v === null || m === null || b === null) return null;
      return { tenant, id, version: Number(v), meta: parseMeta(m), capsuleBytes: Number(b) };
    });
  }

  get(tenant: string, id: string): Promise<{ record: SessionRecord; capsule: Uint8Array } | null> {
    return this.#run("get", async () => {
      this.#ids(tenant, id);
      // One HMGET: version, meta and bytes come from the same committed state.
      const [v, m, d] = await this.#redis.hmgetBuffer(this.#key(tenant, "s", id), "v", "m", "d");
      if (v === null || m === null || d === null) return null;
      const capsule = toBytes(d);
      const record = {
        tenant,
        id,
        version: Number(v.toString()),
        meta: parseMeta(m.toString()),
        capsuleBytes: capsule.length,
      };
      return { record, capsule };
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
      this.#ids(tenant, id);
      const c = this.#capsule(capsule);
      const m = checkMeta(meta);
      const expected = checkExpectedVersion(expectedVersion);
      const [ok, v] = await this.#redis.capsuleCommit(
        this.#key(tenant, "s", id),
        this.#key(tenant, "idx"),
        expected === null ? "" : String(expected),
        JSON.stringify(m),
        String(c.length),
        // ioredis sends Buffers as binary; wrap without copying (the command serializes it now).
        Buffer.from(c.buffer, c.byteOffset, c.length),
        id,
      );
      if (ok !== 1) throw versionConflict(tenant, id, expected, v < 0 ? null : v);
      return { tenant, id, version: v, meta: copyMeta(m), capsuleBytes: c.length };
    });
  }

  delete(tenant: string, id: string, expectedVersion?: number): Promise<boolean> {
    return this.#run("delete", async () => {
      this.#ids(tenant, id);
      const expected = checkExpectedVersion(expectedVersion, true);
      const n = await this.#redis.capsuleDelete(
        this.#key(tenant, "s", id),
        this.#key(tenant, "idx"),
        this.#key(tenant, "ck", id),
        this.#key(tenant, "cd", id),
        expected === null ? "" : String(expected),
        id,
      );
      return n === 1;
    });
  }

  list(tenant: string, opts?: ListOptions): Promise<ListPage> {
    return this.#run("list", async () => {
      checkName("tenant", tenant);
      const q = checkListOptions(opts);
      const min = q.after !== undefined && q.after >= q.prefix ? `(${q.after}` : `[${q.prefix}`;
      const ids = await this.#redis.zrangebylex(
        this.#key(tenant, "idx"),
        min,
        `(${prefixEnd(q.prefix)}`,
        "LIMIT",
        0,
        q.limit + 1,
      );
      const page = ids.slice(0, q.limit);
      const pipe = this.#redis.pipeline();
      for (const id of page) pipe.hmget(this.#key(tenant, "s", id), "v", "m", "b");
      const rows = page.length ? ((await pipe.exec()) ?? []) : [];
      const records: SessionRecord[] = [];
      rows.forEach(([err, row], i) => {
        if (err) throw err;
        const [v, m, b] = row as (string | null)[];
        // A session deleted between the two reads is simply not listed.
        if (v !== null && m !== null && b !== null) {
          records.push({
            tenant,
            id: page[i],
            version: Number(v),
            meta: parseMeta(m),
            capsuleBytes: Number(b),
          });
        }
      });
      return ids.length > q.limit ? { records, cursor: page[page.length - 1] } : { records };
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
      this.#ids(tenant, id);
      checkName("checkpoint name", name);
      const c = this.#capsule(capsule);
      const m = checkMeta(meta);
      const res = await this.#redis.multi()
        .hset(this.#key(tenant, "ck", id), name, JSON.stringify({ meta: m, bytes: c.length }))
        .hset(this.#key(tenant, "cd", id), name, Buffer.from(c.buffer, c.byteOffset, c.length))
        .exec();
      for (const [err] of res ?? []) if (err) throw err;
    });
  }

  getCheckpoint(
    tenant: string,
    id: string,
    name: string,
  ): Promise<{ capsule: Uint8Array; meta: SessionMeta } | null> {
    return this.#run("get checkpoint", async () => {
      this.#ids(tenant, id);
      checkName("checkpoint name", name);
      const res = await this.#redis.multi()
        .hget(this.#key(tenant, "ck", id), name)
        .hgetBuffer(this.#key(tenant, "cd", id), name)
        .exec();
      const [[e1, info], [e2, data]] = res ?? [[null, null], [null, null]];
      if (e1) throw e1;
      if (e2) throw e2;
      if (info === null || data === null) return null;
      return {
        capsule: toBytes(data as Uint8Array),
        meta: (JSON.parse(info as string) as { meta: SessionMeta }).meta,
      };
    });
  }

  listCheckpoints(tenant: string, id: string): Promise<CheckpointInfo[]> {
    return this.#run("list checkpoints", async () => {
      this.#ids(tenant, id);
      const all = await this.#redis.hgetall(this.#key(tenant, "ck", id));
      return Object.keys(all).sort().map((name) => {
        const { meta, bytes } = JSON.parse(all[name]) as { meta: SessionMeta; bytes: number };
        return { name, meta, capsuleBytes: bytes };
      });
    });
  }

  deleteCheckpoint(tenant: string, id: string, name: string): Promise<boolean> {
    return this.#run("delete checkpoint", async () => {
      this.#ids(tenant, id);
      checkName("checkpoint name", name);
      const res = await this.#redis.multi()
        .hdel(this.#key(tenant, "ck", id), name)
        .hdel(this.#key(tenant, "cd", id), name)
        .exec();
      const [[err, n]] = res ?? [[null, 0]];
      if (err) throw err;
      return n === 1;
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeClient(this.#redis);
  }
}

/** Quits a client and waits until its socket is really gone (no timers or handles left behind). */
async function closeClient(redis: Redis): Promise<void> {
  if (redis.status === "ready") {
    try {
      await redis.quit();
    } catch {
      // The connection broke meanwhile: disconnect below.
    }
  }
  if ((redis.status as string) === "end") return;
  const ended = new Promise<void>((resolve) => redis.once("end", () => resolve()));
  redis.disconnect();
  // Between reconnect attempts there is no socket: disconnect only cancels the timer, no "end" follows.
  if ((redis.status as string) === "end" || redis.status === "reconnecting") return;
  await ended;
}

/**
 * Connects to `url` (`redis://[user:pass@]host[:port][/db]`, or `rediss://` for TLS), checks
 * the server answers, and returns a store. Failure → `store_unavailable`. While open, the client
 * reconnects by itself after a connection loss, but commands issued meanwhile fail at once with
 * `store_unavailable` instead of queueing; a commit that fails this way may or may not have been
 * applied (read the head to find out).
 */
export async function openRedisStore(url: string, opts: RedisStoreOptions = {}): Promise<RedisStore> {
  const where = redactUrl(url);
  const db = databaseOf(url);
  // Reconnect forever once open (a restarted Redis is picked up again), but not while opening:
  // an unreachable server at startup is reported at once.
  let opened = false;
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: opts.connectTimeoutMs ?? 5000,
    commandTimeout: opts.commandTimeoutMs,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => (opened ? Math.min(50 * 2 ** Math.min(times, 6), 2000) : null),
  });
  let lastError: Error | undefined;
  // Without a listener ioredis prints every connection error; the store reports them itself.
  redis.on("error", (e: Error) => (lastError = e));
  try {
    await redis.connect();
    // ioredis only reports a failing SELECT as an event; select explicitly so a bad db fails here.
    if (db !== 0) await redis.select(db);
    await redis.ping();
    const store = new RedisStore(redis, where, opts);
    opened = true;
    return store;
  } catch (e) {
    await closeClient(redis);
    if (e instanceof CapsuleError) throw e;
    const why = lastError?.message ?? (e instanceof Error ? e.message : String(e));
    throw new CapsuleError("store_unavailable", `redis store: cannot connect to ${where}: ${why}`, {
      backend: "redis",
    }, { cause: e });
  }
}

/** The database index in a redis URL's path (0 when none). */
function databaseOf(url: string): number {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    throw new CapsuleError("invalid_store_url", `invalid redis URL ${JSON.stringify(redactUrl(url))}`);
  }
  if (path === "" || path === "/") return 0;
  const m = /^\/(\d{1,5})$/.exec(path);
  if (!m) {
    throw new CapsuleError(
      "invalid_store_url",
      `redis database must be a number, got ${JSON.stringify(path)}`,
    );
  }
  return Number(m[1]);
}

/** The URL without its password, for messages. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "redis";
  }
}
