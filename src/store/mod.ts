/**
 * Session stores behind one interface, chosen by URL:
 * - `memory:` — in-process, for tests and single-node development
 * - `kv:<path>` — Deno KV in a local file (`kv::memory:` for a throwaway one); needs `--unstable-kv`
 * - `redis://[user:pass@]host[:port][/db][?namespace=name]` (or `rediss://` for TLS) — shared by nodes
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { KvStore, type KvStoreOptions, openKvStore } from "./kv.ts";
import { MemoryStore } from "./memory.ts";
import { openRedisStore, type RedisStoreOptions } from "./redis.ts";
import type { SessionStore } from "./types.ts";
import { NAME_PATTERN } from "./validate.ts";

export type {
  CheckpointInfo,
  ListOptions,
  ListPage,
  SessionMeta,
  SessionRecord,
  SessionStore,
} from "./types.ts";
export { MemoryStore } from "./memory.ts";
export { KvStore, type KvStoreOptions, openKvStore } from "./kv.ts";
export { openRedisStore, REDIS_MAX_VALUE_BYTES, RedisStore, type RedisStoreOptions } from "./redis.ts";

/** Programmatic tuning that URLs do not carry. */
export interface OpenStoreOptions {
  kv?: KvStoreOptions;
  redis?: RedisStoreOptions;
}

/** What a store URL says, before anything is opened. */
export type StoreSpec =
  | { kind: "memory" }
  | { kind: "kv"; path: string }
  | { kind: "redis"; url: string; namespace?: string };

const SUPPORTED = 'supported: "memory:", "kv:<path>" (e.g. "kv:./data/capsule.kvdb" or "kv::memory:"), ' +
  '"redis://host:port[/db][?namespace=name]", "rediss://…"';

function badUrl(url: string, why: string): CapsuleError {
  return new CapsuleError(
    "invalid_store_url",
    `invalid store URL ${JSON.stringify(url)}: ${why}; ${SUPPORTED}`,
    {
      url,
    },
  );
}

/** Parses a store URL; throws `invalid_store_url` naming the supported schemes. */
export function parseStoreUrl(url: string): StoreSpec {
  if (typeof url !== "string" || url.trim() === "") throw badUrl(String(url), "empty");
  if (url === "memory:" || url === "memory://") return { kind: "memory" };
  if (url.startsWith("kv:")) {
    const path = url.slice(3);
    if (path === "") throw badUrl(url, "kv: needs a file path");
    return { kind: "kv", path };
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw badUrl(url, "not a valid URL");
    }
    if (u.hostname === "") throw badUrl(url, "missing host");
    if (u.pathname !== "" && u.pathname !== "/" && !/^\/\d{1,5}$/.test(u.pathname)) {
      throw badUrl(url, `database must be a number, got ${JSON.stringify(u.pathname.slice(1))}`);
    }
    let namespace: string | undefined;
    for (const [k, v] of u.searchParams) {
      if (k !== "namespace") throw badUrl(url, `unknown parameter ${JSON.stringify(k)} (only "namespace")`);
      if (!NAME_PATTERN.test(v)) throw badUrl(url, "namespace must be 1..128 characters of [A-Za-z0-9._-]");
      namespace = v;
    }
    // ioredis reads host, port, credentials and db from the URL; the query is ours.
    u.search = "";
    return namespace === undefined
      ? { kind: "redis", url: u.toString() }
      : { kind: "redis", url: u.toString(), namespace };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw badUrl(url, scheme ? `unknown scheme "${scheme}:"` : "no scheme");
}

/** Opens the store `url` names (see the module doc). Bad URL → `invalid_store_url`. */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<SessionStore> {
  const spec = parseStoreUrl(url);
  switch (spec.kind) {
    case "memory":
      return new MemoryStore();
    case "kv":
      return await openKvStore(spec.path, opts.kv);
    case "redis":
      return await openRedisStore(spec.url, {
        ...opts.redis,
        ...(spec.namespace ? { namespace: spec.namespace } : {}),
      });
  }
}

/**
 * Background upkeep for a long-running node: a Deno KV store sweeps blobs left by commits that
 * crashed half-way (they are garbage, never visible to readers) every `everyMs`, once they are
 * `olderThanMs` old. Other stores need none. The timer does
 * not keep the process alive; the function it returns stops it and waits for a sweep in progress.
 */
export function maintainStore(
  store: SessionStore,
  opts: { everyMs?: number; olderThanMs?: number } = {},
): () => Promise<void> {
  if (!(store instanceof KvStore)) return () => Promise.resolve();
  let running: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    running = running.then(() => store.sweepOrphans(opts.olderThanMs)).catch((e) =>
      console.error("capsule: KV orphan sweep failed:", e)
    );
  }, opts.everyMs ?? 10 * 60_000);
  Deno.unrefTimer(timer);
  // Stopping waits for a sweep in progress, so the store can be closed right after.
  return async () => {
    clearInterval(timer);
    await running;
  };
}
