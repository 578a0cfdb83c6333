import { assert, assertEquals, assertLess, assertRejects, assertStringIncludes } from "@std/assert";
import { Redis } from "ioredis";
import { CapsuleError } from "../../src/errors.ts";
import { openStore } from "../../src/store/mod.ts";
import { openRedisStore, REDIS_MAX_VALUE_BYTES } from "../../src/store/redis.ts";
import type { SessionStore } from "../../src/store/types.ts";
import { type RedisServer, skipWithoutRedis, startRedis } from "../support/redis.ts";
import { assertBytes, meta, pattern, runStoreConformance } from "./conformance.ts";

const ignore = await skipWithoutRedis();
const T = "t";

let shared: RedisServer | undefined;
let namespaces = 0;
runStoreConformance("redis", () => openStore(`${shared!.url}?namespace=conformance-${namespaces++}`), {
  ignore,
  beforeAll: async () => void (shared = await startRedis()),
  afterAll: async () => await shared?.stop(),
});

/** Runs `fn` with a fresh server, stopping it afterwards. */
async function withRedis(fn: (server: RedisServer) => Promise<void>): Promise<void> {
  const server = await startRedis();
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

async function closeAll(...stores: (SessionStore | undefined)[]): Promise<void> {
  for (const s of stores) await s?.close();
}

Deno.test({
  name: "redis store: two clients share sessions and of their racing commits exactly one wins",
  ignore,
  fn: () =>
    withRedis(async (server) => {
      const a = await openStore(server.url);
      const b = await openStore(server.url);
      try {
        await a.commit(T, "s", pattern(1_000_000, 0), meta(0), null);
        assertBytes((await b.get(T, "s"))?.capsule, pattern(1_000_000, 0));
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) =>
            (i % 2 ? a : b).commit(T, "s", pattern(50_000, i + 1), meta(i + 1), 1)),
        );
        const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        assertEquals(won.length, 1);
        for (const r of results) {
          if (r.status === "rejected") {
            assertEquals((r.reason as CapsuleError).details?.current, 2);
          }
        }
        assertBytes((await a.get(T, "s"))?.capsule, pattern(50_000, won[0] + 1));
        assert(await b.delete(T, "s", 2));
        assertEquals(await a.head(T, "s"), null);
      } finally {
        await closeAll(a, b);
      }
    }),
});

Deno.test({
  name: "redis store: namespaces and databases keep stores apart",
  ignore,
  fn: () =>
    withRedis(async (server) => {
      const x = await openStore(`${server.url}?namespace=x`);
      const y = await openStore(`${server.url}?namespace=y`);
      const db3 = await openStore(`${server.url}/3`);
      const raw = new Redis(server.url, { lazyConnect: true });
      try {
        await x.commit(T, "s", pattern(10, 1), meta(1), null);
        assertEquals(await y.head(T, "s"), null);
        assertEquals((await y.list(T)).records, []);
        await y.commit(T, "s", pattern(20, 2), meta(2), null);
        assertBytes((await x.get(T, "s"))?.capsule, pattern(10, 1));
        await db3.commit(T, "s", pattern(30, 3), meta(3), null);
        await raw.connect();
        assertEquals((await raw.keys("*")).sort(), ["x:{t}:idx", "x:{t}:s:s", "y:{t}:idx", "y:{t}:s:s"]);
        await raw.select(3);
        assertEquals((await raw.keys("*")).sort(), ["capsule:{t}:idx", "capsule:{t}:s:s"]);
      } finally {
        await raw.quit();
        await closeAll(x, y, db3);
      }
    }),
});

Deno.test({
  name: "redis store: capsules over the size limit are refused with capsule_too_large",
  ignore,
  fn: () =>
    withRedis(async (server) => {
      const s = await openRedisStore(server.url, { maxCapsuleBytes: 1000 });
      try {
        await s.commit(T, "s", pattern(1000, 1), meta(1), null);
        const e = await assertRejects(() => s.commit(T, "s", pattern(1001, 2), meta(2), 1), CapsuleError);
        assertEquals(e.code, "capsule_too_large");
        const c = await assertRejects(
          () => s.putCheckpoint(T, "s", "c", pattern(1001, 2), meta(2)),
          CapsuleError,
        );
        assertEquals(c.code, "capsule_too_large");
        assertBytes((await s.get(T, "s"))?.capsule, pattern(1000, 1));
        assertEquals(await s.listCheckpoints(T, "s"), []);
      } finally {
        await s.close();
      }
      // The default limit is Redis' own bulk-string limit (the zeroed buffer is never sent).
      const d = await openRedisStore(server.url);
      try {
        const huge = new Uint8Array(REDIS_MAX_VALUE_BYTES + 1);
        const e = await assertRejects(() => d.commit(T, "h", huge, meta(1), null), CapsuleError);
        assertEquals(e.code, "capsule_too_large");
        assertStringIncludes(e.message, String(REDIS_MAX_VALUE_BYTES));
      } finally {
        await d.close();
      }
    }),
});

Deno.test({
  name: "redis store: a closed port is store_unavailable, quickly",
  ignore,
  async fn() {
    // A port that was just free and has nothing listening.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const t0 = performance.now();
    const e = await assertRejects(() => openStore(`redis://127.0.0.1:${port}`), CapsuleError);
    assertEquals(e.code, "store_unavailable");
    assert(e.message.includes(`127.0.0.1:${port}`), e.message);
    // Generous bound: this fails only if the client retried instead of reporting.
    assertLess(performance.now() - t0, 2000);
  },
});

Deno.test({
  name: "redis store: a bad database index is store_unavailable",
  ignore,
  fn: () =>
    withRedis(async (server) => {
      const e = await assertRejects(() => openStore(`${server.url}/99999`), CapsuleError);
      assertEquals(e.code, "store_unavailable");
    }),
});

Deno.test({
  name: "redis store: losing the server fails calls with store_unavailable, and it recovers on restart",
  ignore,
  async fn() {
    let server = await startRedis();
    let s: SessionStore | undefined;
    let idle: SessionStore | undefined;
    try {
      s = await openStore(server.url);
      idle = await openStore(server.url);
      await s.commit(T, "s", pattern(100, 1), meta(1), null);
      await server.stop();
      // Closing a client that is waiting to reconnect must not hang or leak its timer.
      await idle.close();
      for (const p of [s.head(T, "s"), s.commit(T, "s", pattern(100, 2), meta(2), 1), s.list(T)]) {
        const e = await assertRejects(() => p, CapsuleError);
        assertEquals(e.code, "store_unavailable", e.message);
      }
      // Same port, empty data (no persistence): the client reconnects by itself.
      server = await startRedis(server.port);
      let head: unknown = "unreachable";
      for (let i = 0; i < 200 && head === "unreachable"; i++) {
        head = await s.head(T, "s").catch(async (e) => {
          assertEquals((e as CapsuleError).code, "store_unavailable");
          await new Promise((r) => setTimeout(r, 50));
          return "unreachable";
        });
      }
      assertEquals(head, null, "reconnected to the restarted (empty) server");
      assertEquals((await s.commit(T, "s", pattern(5, 3), meta(3), null)).version, 1);
    } finally {
      await closeAll(s, idle);
      await server.stop();
    }
  },
});
