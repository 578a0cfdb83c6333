/**
 * The behaviour every {@linkcode SessionStore} must have, as one parameterised test suite.
 * Each store's test file calls {@linkcode runStoreConformance} with a factory of empty stores.
 * @module
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "@std/assert";
import { CapsuleError } from "../../src/errors.ts";
import type { SessionMeta, SessionStore } from "../../src/store/types.ts";

/** Hooks around the whole suite (e.g. start and stop a server). */
export interface ConformanceOptions {
  /** Skip the suite (e.g. its backend is not installed here). */
  ignore?: boolean;
  beforeAll?: () => Promise<void>;
  afterAll?: () => Promise<void>;
}

/** A meta with recognisable values. */
export function meta(tokens: number, extra: Partial<SessionMeta> = {}): SessionMeta {
  return {
    model: "qwen3-next-tiny:sha256-0123",
    tokens,
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: `2025-01-01T00:00:${String(tokens % 60).padStart(2, "0")}.000Z`,
    ...extra,
  };
}

/** `n` deterministic pseudo-random bytes (distinct per seed, so mixed-up chunks are detected). */
export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Asserts `p` rejects with `version_conflict` whose details say `current`. */
export async function assertConflict(p: Promise<unknown>, current: number | null): Promise<void> {
  const e = await assertRejects(() => p, CapsuleError);
  assertEquals(e.code, "version_conflict", e.message);
  assertEquals(e.details?.current, current, e.message);
}

async function assertInvalid(p: Promise<unknown>): Promise<void> {
  const e = await assertRejects(() => p, CapsuleError);
  assertEquals(e.code, "invalid_request", e.message);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Asserts equal bytes without dumping megabytes into the failure message. */
export function assertBytes(actual: Uint8Array | undefined, expected: Uint8Array, msg = ""): void {
  assert(actual instanceof Uint8Array, `expected a Uint8Array ${msg}`);
  assert(
    bytesEqual(actual, expected),
    `bytes differ ${msg}: got ${actual.length} bytes, expected ${expected.length}`,
  );
}

type Case = (s: SessionStore) => Promise<void>;

const T = "tenant-a";
const U = "tenant-b";

const cases: Record<string, Case> = {
  "absent sessions read as null and lists are empty": async (s) => {
    assertEquals(await s.head(T, "nope"), null);
    assertEquals(await s.get(T, "nope"), null);
    assertEquals(await s.list(T), { records: [] });
    assertEquals(await s.delete(T, "nope"), false);
  },

  "create returns version 1 and the stored record": async (s) => {
    const cap = pattern(1000, 1);
    const m = meta(7, { parent: "root-1", labels: { agent: "planner", "x.y": "" } });
    const rec = await s.commit(T, "s1", cap, m, null);
    assertEquals(rec, { tenant: T, id: "s1", version: 1, meta: m, capsuleBytes: 1000 });
    assertEquals(await s.head(T, "s1"), rec);
    const got = await s.get(T, "s1");
    assertEquals(got?.record, rec);
    assertBytes(got?.capsule, cap);
  },

  "create on an existing session conflicts and changes nothing": async (s) => {
    await s.commit(T, "s1", pattern(10, 1), meta(1), null);
    await assertConflict(s.commit(T, "s1", pattern(20, 2), meta(2), null), 1);
    const got = await s.get(T, "s1");
    assertEquals(got?.record.version, 1);
    assertEquals(got?.record.meta, meta(1));
    assertBytes(got?.capsule, pattern(10, 1));
  },

  "compare-and-set commits advance the version and stale versions conflict": async (s) => {
    await s.commit(T, "s1", pattern(10, 1), meta(1), null);
    const r2 = await s.commit(T, "s1", pattern(11, 2), meta(2), 1);
    assertEquals(r2.version, 2);
    assertEquals(r2.capsuleBytes, 11);
    const r3 = await s.commit(T, "s1", pattern(12, 3), meta(3), 2);
    assertEquals(r3.version, 3);
    await assertConflict(s.commit(T, "s1", pattern(13, 4), meta(4), 2), 3);
    await assertConflict(s.commit(T, "s1", pattern(13, 4), meta(4), 4), 3);
    await assertConflict(s.commit(T, "other", pattern(13, 4), meta(4), 1), null);
    assertEquals(await s.head(T, "other"), null);
    const got = await s.get(T, "s1");
    assertEquals(got?.record.version, 3);
    assertEquals(got?.record.meta.tokens, 3);
    assertBytes(got?.capsule, pattern(12, 3));
  },

  "of 20 racing commits on one version exactly one wins": async (s) => {
    await s.commit(T, "race", pattern(100, 0), meta(0), null);
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => s.commit(T, "race", pattern(5000 + i, 100 + i), meta(100 + i), 1)),
    );
    const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [{ i, rec: r.value }] : []));
    assertEquals(won.length, 1, "exactly one commit succeeds");
    assertEquals(won[0].rec.version, 2);
    for (const r of results) {
      if (r.status === "rejected") {
        assert(r.reason instanceof CapsuleError, String(r.reason));
        assertEquals(r.reason.code, "version_conflict");
        assertEquals(r.reason.details?.current, 2);
      }
    }
    const got = await s.get(T, "race");
    assertEquals(got?.record.version, 2);
    assertEquals(got?.record.meta.tokens, 100 + won[0].i);
    assertBytes(got?.capsule, pattern(5000 + won[0].i, 100 + won[0].i), "winner's capsule stored");
  },

  "of 20 racing creates exactly one wins": async (s) => {
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => s.commit(T, "new", pattern(300, i), meta(i), null)),
    );
    const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
    assertEquals(won.length, 1);
    for (const r of results) {
      if (r.status === "rejected") assertEquals((r.reason as CapsuleError).details?.current, 1);
    }
    assertBytes((await s.get(T, "new"))?.capsule, pattern(300, won[0]));
  },

  "capsules of 0 bytes, a few bytes, chunk edges and 3 MB round-trip": async (s) => {
    const sizes = [0, 1, 5, 65535, 65536, 65537, 3 * 1024 * 1024 + 17];
    for (const [i, n] of sizes.entries()) {
      const cap = pattern(n, 10 + i);
      const rec = await s.commit(T, `size-${n}`, cap, meta(n), null);
      assertEquals(rec.capsuleBytes, n);
      const got = await s.get(T, `size-${n}`);
      assertBytes(got?.capsule, cap, `size ${n}`);
      assertEquals(got?.record.capsuleBytes, n);
    }
  },

  "a big capsule replaced by a small one (and back) reads back exactly": async (s) => {
    const big = pattern(3 * 1024 * 1024, 1);
    const small = pattern(10, 2);
    const empty = new Uint8Array(0);
    await s.commit(T, "s", big, meta(1), null);
    await s.commit(T, "s", small, meta(2), 1);
    assertBytes((await s.get(T, "s"))?.capsule, small);
    await s.commit(T, "s", empty, meta(3), 2);
    assertBytes((await s.get(T, "s"))?.capsule, empty);
    const big2 = pattern(2 * 1024 * 1024 + 3, 3);
    await s.commit(T, "s", big2, meta(4), 3);
    const got = await s.get(T, "s");
    assertBytes(got?.capsule, big2);
    assertEquals(got?.record.version, 4);
  },

  "bytes are copied in and out": async (s) => {
    const cap = pattern(100, 1);
    const keep = cap.slice();
    await s.commit(T, "s", cap, meta(1), null);
    cap.fill(0);
    const a = await s.get(T, "s");
    assertBytes(a?.capsule, keep, "input mutation must not reach the store");
    a!.capsule.fill(7);
    a!.record.meta.tokens = 999;
    const b = await s.get(T, "s");
    assertBytes(b?.capsule, keep, "output mutation must not reach the store");
    assertEquals(b?.record.meta.tokens, 1);
    // A view into a larger buffer stores only the viewed bytes.
    const backing = pattern(50, 9);
    await s.commit(T, "view", backing.subarray(10, 20), meta(1), null);
    assertBytes((await s.get(T, "view"))?.capsule, backing.slice(10, 20));
  },

  "meta is copied in and out": async (s) => {
    const m = meta(1, { labels: { a: "1" } });
    await s.commit(T, "s", pattern(3, 1), m, null);
    m.labels!.a = "changed";
    m.tokens = 5;
    const h = await s.head(T, "s");
    assertEquals(h?.meta, meta(1, { labels: { a: "1" } }));
    h!.meta.labels!.a = "x";
    assertEquals((await s.head(T, "s"))?.meta.labels, { a: "1" });
  },

  "tenants are isolated": async (s) => {
    await s.commit(T, "same", pattern(10, 1), meta(1), null);
    await s.commit(U, "same", pattern(20, 2), meta(2), null);
    await s.commit(U, "same", pattern(30, 3), meta(3), 1);
    await s.commit(T, "only-a", pattern(5, 4), meta(4), null);
    assertEquals((await s.head(T, "same"))?.version, 1);
    assertEquals((await s.head(U, "same"))?.version, 2);
    assertBytes((await s.get(T, "same"))?.capsule, pattern(10, 1));
    assertBytes((await s.get(U, "same"))?.capsule, pattern(30, 3));
    assertEquals(await s.head(U, "only-a"), null);
    assertEquals((await s.list(T)).records.map((r) => r.id), ["only-a", "same"]);
    assertEquals((await s.list(U)).records.map((r) => [r.tenant, r.id, r.version]), [[U, "same", 2]]);
    assert(await s.delete(T, "same"));
    assertEquals(await s.head(T, "same"), null);
    assertEquals((await s.head(U, "same"))?.version, 2);
    await s.putCheckpoint(T, "cp", "n", pattern(4, 1), meta(1));
    assertEquals(await s.getCheckpoint(U, "cp", "n"), null);
    assertEquals(await s.listCheckpoints(U, "cp"), []);
  },

  "delete honours the expected version and a deleted id starts again at version 1": async (s) => {
    await s.commit(T, "d", pattern(10, 1), meta(1), null);
    await s.commit(T, "d", pattern(10, 2), meta(2), 1);
    assertEquals(await s.delete(T, "d", 1), false);
    assertEquals(await s.delete(T, "d", 3), false);
    assertEquals((await s.head(T, "d"))?.version, 2);
    assertEquals(await s.delete(T, "d", 2), true);
    assertEquals(await s.head(T, "d"), null);
    assertEquals(await s.get(T, "d"), null);
    assertEquals(await s.delete(T, "d"), false);
    assertEquals((await s.commit(T, "d", pattern(10, 3), meta(3), null)).version, 1);
    assertEquals(await s.delete(T, "d"), true);
    assertEquals((await s.list(T)).records, []);
  },

  "list filters by prefix, sorts by id and paginates": async (s) => {
    const ids = ["a-0", "a-1", "a-10", "a-11", "a-2", "a-3", "a-4", "a-5", "a-6", "a-7", "a-8", "a-9"];
    for (const [i, id] of [...ids].reverse().entries()) {
      await s.commit(T, id, pattern(i + 1, i), meta(i), null);
    }
    await s.commit(T, "a", pattern(1, 1), meta(1), null);
    await s.commit(T, "a_", pattern(1, 1), meta(1), null);
    await s.commit(T, "b-1", pattern(1, 1), meta(1), null);
    await s.commit(U, "a-zz", pattern(1, 1), meta(1), null);
    await s.commit(T, "a-5", pattern(77, 1), meta(50), 1);

    const seen: string[] = [];
    let cursor: string | undefined;
    const sizes: number[] = [];
    do {
      const page = await s.list(T, { prefix: "a-", limit: 5, cursor });
      sizes.push(page.records.length);
      for (const r of page.records) {
        seen.push(r.id);
        assertEquals(r.tenant, T);
        if (r.id === "a-5") assertEquals([r.version, r.capsuleBytes, r.meta.tokens], [2, 77, 50]);
        else assertEquals(r.version, 1);
      }
      cursor = page.cursor;
    } while (cursor !== undefined);
    assertEquals(seen, ids);
    assertEquals(sizes, [5, 5, 2]);

    const all = await s.list(T);
    assertEquals(all.records.map((r) => r.id), ["a", "a-0", ...ids.slice(1), "a_", "b-1"]);
    assertEquals(all.cursor, undefined);
    const exact = await s.list(T, { prefix: "a-", limit: 12 });
    assertEquals(exact.records.length, 12);
    assertEquals(exact.cursor, undefined, "no cursor when nothing follows");
    assertEquals((await s.list(T, { prefix: "zzz" })).records, []);
    assertEquals((await s.list(T, { prefix: "b" })).records.map((r) => r.id), ["b-1"]);
    assertEquals((await s.list(T, { limit: 1, cursor: "a-9" })).records.map((r) => r.id), ["a_"]);
    // A cursor before the prefix range starts at the prefix.
    assertEquals((await s.list(T, { prefix: "b", cursor: "a" })).records.map((r) => r.id), ["b-1"]);
  },

  "checkpoints are immutable named copies": async (s) => {
    const c1 = pattern(70000, 1);
    const c2 = pattern(12, 2);
    await s.commit(T, "s", c1, meta(10), null);
    await s.putCheckpoint(T, "s", "before-tool", c1, meta(10));
    await s.commit(T, "s", c2, meta(20), 1);
    await s.putCheckpoint(T, "s", "after-tool", c2, meta(20, { labels: { step: "2" } }));
    await s.putCheckpoint(T, "s", "empty", new Uint8Array(0), meta(0));
    c1.fill(0);
    const back = await s.getCheckpoint(T, "s", "before-tool");
    assertBytes(back?.capsule, pattern(70000, 1));
    assertEquals(back?.meta, meta(10));
    back!.capsule.fill(1);
    assertBytes((await s.getCheckpoint(T, "s", "before-tool"))?.capsule, pattern(70000, 1));
    assertBytes((await s.getCheckpoint(T, "s", "empty"))?.capsule, new Uint8Array(0));
    assertEquals(await s.listCheckpoints(T, "s"), [
      { name: "after-tool", meta: meta(20, { labels: { step: "2" } }), capsuleBytes: 12 },
      { name: "before-tool", meta: meta(10), capsuleBytes: 70000 },
      { name: "empty", meta: meta(0), capsuleBytes: 0 },
    ]);
    // Later commits leave checkpoints alone.
    await s.commit(T, "s", pattern(5, 3), meta(30), 2);
    assertBytes((await s.getCheckpoint(T, "s", "after-tool"))?.capsule, c2);
    // Putting an existing name replaces it whole.
    await s.putCheckpoint(T, "s", "before-tool", pattern(9, 4), meta(40));
    const replaced = await s.getCheckpoint(T, "s", "before-tool");
    assertBytes(replaced?.capsule, pattern(9, 4));
    assertEquals(replaced?.meta.tokens, 40);
    assertEquals(await s.getCheckpoint(T, "s", "missing"), null);
    assertEquals(await s.getCheckpoint(T, "other", "after-tool"), null);
    assertEquals(await s.listCheckpoints(T, "other"), []);
    assertEquals(await s.deleteCheckpoint(T, "s", "after-tool"), true);
    assertEquals(await s.deleteCheckpoint(T, "s", "after-tool"), false);
    assertEquals(await s.getCheckpoint(T, "s", "after-tool"), null);
    assertEquals((await s.listCheckpoints(T, "s")).map((c) => c.name), ["before-tool", "empty"]);
    // The session itself is unaffected by checkpoint operations.
    assertEquals((await s.head(T, "s"))?.version, 3);
  },

  "checkpoints need no session, and deleting a session deletes its checkpoints": async (s) => {
    await s.putCheckpoint(T, "loose", "n", pattern(5, 1), meta(1));
    assertBytes((await s.getCheckpoint(T, "loose", "n"))?.capsule, pattern(5, 1));
    assertEquals(await s.head(T, "loose"), null);
    assertEquals((await s.list(T)).records, [], "checkpoints are not sessions");

    await s.commit(T, "s", pattern(5, 1), meta(1), null);
    await s.putCheckpoint(T, "s", "one", pattern(6, 2), meta(2));
    await s.putCheckpoint(T, "s", "two", pattern(7, 3), meta(3));
    assertEquals(await s.delete(T, "s", 9), false);
    assertEquals((await s.listCheckpoints(T, "s")).length, 2, "a refused delete keeps checkpoints");
    assertEquals(await s.delete(T, "s"), true);
    assertEquals(await s.listCheckpoints(T, "s"), []);
    assertEquals(await s.getCheckpoint(T, "s", "one"), null);
    assertBytes((await s.getCheckpoint(T, "loose", "n"))?.capsule, pattern(5, 1));
  },

  "a failed commit leaves the previous version readable": async (s) => {
    const v1 = pattern(200_000, 1);
    await s.commit(T, "s", v1, meta(1), null);
    await assertConflict(s.commit(T, "s", pattern(300_000, 2), meta(2), 7), 1);
    await assertConflict(s.commit(T, "s", pattern(300_000, 3), meta(3), null), 1);
    await assertInvalid(s.commit(T, "s", pattern(300_000, 4), { ...meta(4), tokens: -1 }, 1));
    const got = await s.get(T, "s");
    assertEquals(got?.record, { tenant: T, id: "s", version: 1, meta: meta(1), capsuleBytes: 200_000 });
    assertBytes(got?.capsule, v1);
  },

  "invalid tenants, ids, names, metas, capsules and versions are refused": async (s) => {
    const bad = ["", "a/b", "a:b", "a b", "{x}", "é", "x".repeat(129), "a\0"];
    for (const b of bad) {
      await assertInvalid(s.head(b, "ok"));
      await assertInvalid(s.head("ok", b));
      await assertInvalid(s.get("ok", b));
      await assertInvalid(s.commit(b, "ok", pattern(1, 1), meta(1), null));
      await assertInvalid(s.commit("ok", b, pattern(1, 1), meta(1), null));
      await assertInvalid(s.delete("ok", b));
      await assertInvalid(s.list(b));
      await assertInvalid(s.putCheckpoint("ok", "ok", b, pattern(1, 1), meta(1)));
      await assertInvalid(s.getCheckpoint("ok", "ok", b));
      await assertInvalid(s.deleteCheckpoint("ok", b, "n"));
      await assertInvalid(s.listCheckpoints(b, "ok"));
    }
    assertEquals((await s.commit("ok", "x".repeat(128), pattern(1, 1), meta(1), null)).version, 1);
    const badMetas: unknown[] = [
      null,
      {},
      { ...meta(1), tokens: 1.5 },
      { ...meta(1), model: 3 },
      { ...meta(1), labels: { a: 1 } },
      { ...meta(1), parent: 5 },
      { ...meta(1), labels: { big: "x".repeat(20_000) } },
    ];
    for (const m of badMetas) await assertInvalid(s.commit("ok", "m", pattern(1, 1), m as SessionMeta, null));
    await assertInvalid(s.commit("ok", "m", "not bytes" as unknown as Uint8Array, meta(1), null));
    await assertInvalid(s.commit("ok", "m", pattern(1, 1), meta(1), 0));
    await assertInvalid(s.commit("ok", "m", pattern(1, 1), meta(1), 1.5));
    await assertInvalid(s.delete("ok", "m", -1));
    await assertInvalid(s.list("ok", { limit: 0 }));
    await assertInvalid(s.list("ok", { limit: 1001 }));
    await assertInvalid(s.list("ok", { prefix: "a/b" }));
    await assertInvalid(s.list("ok", { cursor: "" }));
    assertEquals(await s.head("ok", "m"), null, "nothing stored by refused commits");
    // Unknown meta fields are dropped rather than stored.
    await s.commit("ok", "m", pattern(1, 1), { ...meta(1), extra: "x" } as SessionMeta, null);
    assertEquals((await s.head("ok", "m"))?.meta, meta(1));
  },

  "a closed store refuses further calls": async (s) => {
    await s.commit(T, "s", pattern(3, 1), meta(1), null);
    await s.close();
    await s.close();
    for (const p of [s.head(T, "s"), s.get(T, "s"), s.list(T), s.commit(T, "s", pattern(1, 1), meta(1), 1)]) {
      const e = await assertRejects(() => p, CapsuleError);
      assertStrictEquals(e.code, "store_unavailable");
    }
  },
};

/** The case names, for store test files that want to assert coverage. */
export const conformanceCases: readonly string[] = Object.keys(cases);

/** Registers one Deno test `"<name> store conformance"` with one step per case. */
export function runStoreConformance(
  name: string,
  factory: () => Promise<SessionStore>,
  opts: ConformanceOptions = {},
): void {
  Deno.test({
    name: `${name} store conformance`,
    ignore: opts.ignore ?? false,
    async fn(t) {
      await opts.beforeAll?.();
      try {
        for (const [caseName, run] of Object.entries(cases)) {
          await t.step(caseName, async () => {
            const store = await factory();
            try {
              await run(store);
            } finally {
              await store.close();
            }
          });
        }
      } finally {
        await opts.afterAll?.();
      }
    },
  });
}
