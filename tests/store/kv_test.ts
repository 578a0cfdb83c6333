import { assert, assertEquals, assertRejects } from "@std/assert";
import { CapsuleError } from "../../src/errors.ts";
import { type KvStoreOptions, openKvStore } from "../../src/store/kv.ts";
import { maintainStore, openStore } from "../../src/store/mod.ts";
import { assertBytes, assertConflict, meta, pattern, runStoreConformance } from "./conformance.ts";

runStoreConformance("kv (:memory:)", () => openKvStore(":memory:"));
// Small chunks: every multi-chunk and multi-batch path is exercised by the same cases.
runStoreConformance("kv (4 KiB chunks)", () => openKvStore(":memory:", { chunkSize: 4096 }));

const T = "t";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "capsule-kv-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Distinct blob ids present in the database file (opened directly, store closed). */
async function blobIds(path: string): Promise<string[]> {
  const kv = await Deno.openKv(path);
  try {
    const ids = new Set<string>();
    for await (const e of kv.list({ prefix: ["capsule", "blob"] })) ids.add(String(e.key[4]));
    return [...ids];
  } finally {
    kv.close();
  }
}

Deno.test("kv store persists sessions and checkpoints across close and reopen", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/nested/dir/capsule.kvdb`;
    const a = await openStore(`kv:${path}`);
    await a.commit(T, "s", pattern(200_000, 1), meta(1), null);
    await a.commit(T, "s", pattern(150_000, 2), meta(2, { parent: "p" }), 1);
    await a.putCheckpoint(T, "s", "c", pattern(70_000, 3), meta(3));
    await a.close();
    const b = await openStore(`kv:${path}`);
    try {
      const got = await b.get(T, "s");
      assertEquals(got?.record, {
        tenant: T,
        id: "s",
        version: 2,
        meta: meta(2, { parent: "p" }),
        capsuleBytes: 150_000,
      });
      assertBytes(got?.capsule, pattern(150_000, 2));
      assertBytes((await b.getCheckpoint(T, "s", "c"))?.capsule, pattern(70_000, 3));
      await assertConflict(b.commit(T, "s", pattern(1, 1), meta(3), 1), 2);
    } finally {
      await b.close();
    }
    assertEquals(
      (await blobIds(path)).length,
      2,
      "only the live version's and the checkpoint's blobs remain",
    );
  });
});

Deno.test("kv store: a crash between blob write and head commit leaves the previous version intact", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.kvdb`;
    const a = await openKvStore(path);
    await a.commit(T, "s", pattern(100_000, 1), meta(1), null);
    // The first half of a commit of version 2, then the process "dies".
    await a.stageBlob(T, "s", pattern(300_000, 2));
    await a.close();
    assertEquals((await blobIds(path)).length, 2);

    const b = await openKvStore(path);
    try {
      const got = await b.get(T, "s");
      assertEquals(got?.record.version, 1);
      assertBytes(got?.capsule, pattern(100_000, 1));
      assertEquals(await b.sweepOrphans(), 0, "a fresh pending blob may still be committing");
      assertEquals(await b.sweepOrphans(0), 1, "an old pending blob is garbage");
      assertEquals(await b.sweepOrphans(0), 0);
      assertBytes((await b.get(T, "s"))?.capsule, pattern(100_000, 1));
      assertEquals((await b.commit(T, "s", pattern(10, 3), meta(3), 1)).version, 2);
    } finally {
      await b.close();
    }
    assertEquals((await blobIds(path)).length, 1);
  });
});

Deno.test("kv store: a crash after the head commit leaves the new version and sweepable garbage", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.kvdb`;
    const opts: KvStoreOptions = {
      hooks: {
        beforeBlobDelete: () => Promise.reject(new Error("simulated crash")),
      },
    };
    const a = await openKvStore(path, opts);
    await a.commit(T, "s", pattern(100_000, 1), meta(1), null);
    assertEquals((await a.commit(T, "s", pattern(90_000, 2), meta(2), 1)).version, 2);
    await a.close();
    assertEquals((await blobIds(path)).length, 2, "the replaced blob was not deleted");
    const b = await openKvStore(path);
    try {
      assertBytes((await b.get(T, "s"))?.capsule, pattern(90_000, 2));
      assertEquals(await b.sweepOrphans(), 1, "a replaced blob is garbage at once");
      assertBytes((await b.get(T, "s"))?.capsule, pattern(90_000, 2));
    } finally {
      await b.close();
    }
    assertEquals((await blobIds(path)).length, 1);
  });
});

Deno.test("kv store: a commit whose staged blob was swept fails instead of referencing it", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.kvdb`;
    const sweeper = await openKvStore(path);
    const a = await openKvStore(path, {
      hooks: { afterBlobWrite: async () => void await sweeper.sweepOrphans(0) },
    });
    try {
      await sweeper.commit(T, "s", pattern(80_000, 1), meta(1), null);
      const e = await assertRejects(() => a.commit(T, "s", pattern(80_000, 2), meta(2), 1), CapsuleError);
      assertEquals(e.code, "store_unavailable");
      const got = await a.get(T, "s");
      assertEquals(got?.record.version, 1);
      assertBytes(got?.capsule, pattern(80_000, 1));
    } finally {
      await a.close();
      await sweeper.close();
    }
    assertEquals((await blobIds(path)).length, 1);
  });
});

Deno.test("kv store: a reader whose blob is deleted mid-read retries from the head", async () => {
  let calls = 0;
  let writer: (() => Promise<unknown>) | undefined;
  const s = await openKvStore(":memory:", {
    chunkSize: 1024,
    hooks: {
      afterHeadRead: async () => {
        calls++;
        const w = writer;
        writer = undefined;
        await w?.();
      },
    },
  });
  try {
    await s.commit(T, "s", pattern(50_000, 1), meta(1), null);
    writer = () => s.commit(T, "s", pattern(40_000, 2), meta(2), 1);
    const got = await s.get(T, "s");
    assertEquals(calls, 2, "first read lost its blob and was retried");
    assertEquals(got?.record.version, 2);
    assertBytes(got?.capsule, pattern(40_000, 2));

    calls = 0;
    writer = () => s.delete(T, "s");
    assertEquals(await s.get(T, "s"), null);
    assertEquals(calls, 1);

    calls = 0;
    await s.putCheckpoint(T, "s", "c", pattern(30_000, 3), meta(3));
    writer = () => s.putCheckpoint(T, "s", "c", pattern(20_000, 4), meta(4));
    assertBytes((await s.getCheckpoint(T, "s", "c"))?.capsule, pattern(20_000, 4));
    assertEquals(calls, 2);
  } finally {
    await s.close();
  }
});

Deno.test("kv store: concurrent readers always see a whole committed version", async () => {
  const s = await openKvStore(":memory:", { chunkSize: 2048 });
  const size = (v: number) => 20_000 + ((v * 7919) % 30_000);
  try {
    await s.commit(T, "s", pattern(size(1), 1), meta(1), null);
    let done = false;
    const writer = (async () => {
      for (let v = 1; v < 30; v++) await s.commit(T, "s", pattern(size(v + 1), v + 1), meta(v + 1), v);
      done = true;
    })();
    let reads = 0;
    const reader = async () => {
      while (!done) {
        const got = await s.get(T, "s");
        const v = got!.record.version;
        assertEquals(got!.record.meta.tokens, v);
        assertBytes(got!.capsule, pattern(size(v), v), `version ${v}`);
        reads++;
      }
    };
    await Promise.all([writer, reader(), reader(), reader()]);
    assert(reads >= 3);
    assertEquals((await s.head(T, "s"))?.version, 30);
  } finally {
    await s.close();
  }
});

Deno.test("kv store: racing commits through two handles on one file: exactly one wins", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/r.kvdb`;
    const a = await openKvStore(path);
    const b = await openKvStore(path);
    try {
      await a.commit(T, "s", pattern(10, 0), meta(0), null);
      const results = await Promise.allSettled(
        Array.from(
          { length: 20 },
          (_, i) => (i % 2 ? a : b).commit(T, "s", pattern(100_000, i + 1), meta(i + 1), 1),
        ),
      );
      const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      assertEquals(won.length, 1);
      for (const r of results) {
        if (r.status === "rejected") assertEquals((r.reason as CapsuleError).details?.current, 2);
      }
      assertBytes((await b.get(T, "s"))?.capsule, pattern(100_000, won[0] + 1));
    } finally {
      await a.close();
      await b.close();
    }
    assertEquals((await blobIds(path)).length, 1, "losers' blobs were removed");
  });
});

Deno.test("kv store: an unopenable path is store_unavailable", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    const e = await assertRejects(() => openStore(`kv:${dir}/file/db.kvdb`), CapsuleError);
    assertEquals(e.code, "store_unavailable");
  });
});

Deno.test("kv store: a node's background upkeep sweeps the blobs of crashed commits", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.kvdb`;
    const store = await openKvStore(path);
    try {
      await store.commit(T, "s", pattern(100_000, 1), meta(1), null);
      await store.stageBlob(T, "s", pattern(200_000, 2)); // a commit that never finished
      const stop = maintainStore(store, { everyMs: 10, olderThanMs: 0 });
      try {
        for (let i = 0; i < 200 && (await blobIds(path)).length > 1; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
      } finally {
        await stop();
      }
      assertEquals((await blobIds(path)).length, 1, "the orphan is gone, the committed blob stays");
      assertBytes((await store.get(T, "s"))?.capsule, pattern(100_000, 1));
    } finally {
      await store.close();
    }
  });
});
