/**
 * Agent memory operations, run on both implementations of MemoryApi: in-process (`Memory` over a
 * store) and over HTTP (`CapsuleClient` against the sidecar app). Both must behave the same, and
 * both must agree with plain engine sessions.
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import {
  type Capsule,
  CapsuleClient,
  CapsuleError,
  CheckpointNotFoundError,
  Memory,
  type MemoryApi,
  MemoryStore,
  moveMemory,
  type SessionStore,
  VersionConflictError,
} from "../../mod.ts";
import { createSidecarApp } from "../../src/sidecar/sidecar.ts";
import { Capsule as CapsuleClass } from "../../src/client/local.ts";
import { PROMPT, testCapsule } from "./helpers.ts";

interface Impl {
  name: string;
  make(cap: Capsule, store: SessionStore): MemoryApi;
}

const impls: Impl[] = [
  { name: "in-process Memory", make: (cap, store) => new Memory(cap, store) },
  {
    name: "CapsuleClient → sidecar",
    make: (cap, store) => {
      const app = createSidecarApp({ engine: cap.engine, store });
      return new CapsuleClient({
        baseUrl: "http://sidecar.test",
        fetch: async (req) => await app.fetch(req),
      });
    },
  },
];

const OPTS = { maxTokens: 6, ignoreEos: true } as const;

for (const impl of impls) {
  const t = (name: string, fn: (m: MemoryApi, cap: Capsule, store: MemoryStore) => Promise<void>) =>
    Deno.test(`${impl.name}: ${name}`, async () => {
      const cap = await testCapsule();
      const store = new MemoryStore();
      await fn(impl.make(cap, store), cap, store);
    });

  t("open creates an empty session once and then finds it", async (m) => {
    assertEquals(await m.open("agent-1"), { id: "agent-1", version: 1, tokens: 0, created: true });
    assertEquals(await m.open("agent-1"), { id: "agent-1", version: 1, tokens: 0, created: false });
    await assertRejects(() => m.open("not a name"), CapsuleError);
  });

  t("remember then recall equals an uninterrupted local session", async (m, cap) => {
    await m.open("a");
    const r1 = await m.remember("a", PROMPT);
    assertEquals(r1.version, 2);
    const stream = m.recall("a", OPTS);
    const ids: (number | null)[] = [];
    for await (const d of stream) ids.push(d.id);
    const r = await stream.result;
    assertEquals(r.version, 3);

    const local = await cap.createSession(PROMPT);
    const want = await local.complete(OPTS);
    assertEquals(r.outputIds, want.outputIds);
    assertEquals(ids.filter((x) => x !== null), want.outputIds);
    assertEquals(r.text, want.text);
    assertEquals(r.tokens, local.length);
    assertEquals((await m.info("a")).tokens, local.length);
  });

  t("rewind to a checkpoint restores the exact state: the next recall repeats", async (m) => {
    await m.open("a");
    await m.remember("a", PROMPT);
    const cp = await m.checkpoint("a", "before");
    assertEquals(cp.name, "before");
    const first = await m.recall("a", OPTS).result;
    await m.remember("a", " Something to forget.");
    const back = await m.rewind("a", "before");
    assertEquals(back.tokens, cp.tokens);
    assertEquals(back.version, first.version + 2);
    const again = await m.recall("a", OPTS).result;
    assertEquals(again.outputIds, first.outputIds);
    // The checkpoint is unchanged by later commits and can be used again.
    assertEquals((await m.rewind("a", "before")).tokens, cp.tokens);
  });

  t("checkpoints are listed, replaced by name and deleted", async (m) => {
    await m.open("a");
    await m.checkpoint("a", "zero");
    await m.remember("a", [1, 2, 3]);
    await m.checkpoint("a", "three");
    assertEquals((await m.checkpoints("a")).map((c) => [c.name, c.tokens]), [["three", 3], ["zero", 0]]);
    await m.remember("a", [4]);
    await m.checkpoint("a", "zero"); // replaces
    assertEquals((await m.checkpoints("a")).map((c) => [c.name, c.tokens]), [["three", 3], ["zero", 4]]);
    await m.deleteCheckpoint("a", "three");
    assertEquals((await m.checkpoints("a")).map((c) => c.name), ["zero"]);
    const e = await assertRejects(() => m.deleteCheckpoint("a", "three"), CapsuleError);
    assertEquals(e.code, "checkpoint_not_found");
    const e2 = await assertRejects(() => m.rewind("a", "nope"), CapsuleError);
    assertEquals(e2.code, "checkpoint_not_found");
    const e3 = await assertRejects(() => m.checkpoints("missing"), CapsuleError);
    assertEquals(e3.code, "session_not_found");
  });

  t("a branch is a new session with the same state, independent afterwards", async (m) => {
    await m.open("a");
    await m.remember("a", PROMPT);
    const b = await m.branch("a");
    assertNotEquals(b.id, "a");
    assertEquals(b.tokens, (await m.info("a")).tokens);
    assertEquals((await m.info(b.id)).parent, "a");
    await m.remember(b.id, " Only in the branch.");
    const ra = await m.recall("a", OPTS).result;
    const fresh = await m.branch("a", { ifVersion: ra.version });
    assertEquals((await m.info(fresh.id)).tokens, ra.tokens);
    assert((await m.info(b.id)).tokens !== ra.tokens);
  });

  t("if_version guards every write with version_conflict carrying the current version", async (m) => {
    await m.open("a");
    await m.remember("a", [1, 2]);
    const conflicts = [
      () => m.remember("a", [3], { ifVersion: 1 }),
      () => m.recall("a", { ...OPTS, ifVersion: 1 }).result,
      () => m.branch("a", { ifVersion: 1 }),
      () => m.checkpoint("a", "x", { ifVersion: 1 }),
      () => m.delete("a", { ifVersion: 1 }),
    ];
    for (const op of conflicts) {
      const e = await assertRejects(op, CapsuleError);
      assertEquals(e.code, "version_conflict");
      if (e instanceof VersionConflictError) assertEquals(e.currentVersion, 2);
      else assertEquals(e.details?.current, 2);
    }
    await m.checkpoint("a", "x");
    const e = await assertRejects(() => m.rewind("a", "x", { ifVersion: 1 }), CapsuleError);
    assertEquals(e.code, "version_conflict");
    assertEquals((await m.remember("a", [3], { ifVersion: 2 })).version, 3);
  });

  t("list pages through sessions; delete removes a session with its checkpoints", async (m) => {
    for (const id of ["s1", "s2", "s3"]) await m.open(id);
    const p1 = await m.list({ limit: 2 });
    assertEquals(p1.sessions.map((s) => s.id), ["s1", "s2"]);
    assert(p1.cursor !== undefined);
    const p2 = await m.list({ limit: 2, cursor: p1.cursor });
    assertEquals(p2.sessions.map((s) => s.id), ["s3"]);
    assertEquals(p2.cursor, undefined);
    assertEquals((await m.list({ prefix: "s2" })).sessions.map((s) => s.id), ["s2"]);
    await m.checkpoint("s2", "c");
    await m.delete("s2");
    const e = await assertRejects(() => m.info("s2"), CapsuleError);
    assertEquals(e.code, "session_not_found");
    await m.open("s2");
    assertEquals(await m.checkpoints("s2"), []);
    const e2 = await assertRejects(() => m.delete("nope"), CapsuleError);
    assertEquals(e2.code, "session_not_found");
  });

  t("a cancelled recall commits nothing", async (m) => {
    await m.open("a");
    const before = await m.remember("a", PROMPT);
    // Far more tokens than are read: over HTTP the service stops when the connection closes.
    const stream = m.recall("a", { maxTokens: 400, ignoreEos: true });
    let n = 0;
    for await (const _ of stream) if (++n === 2) break;
    await assertRejects(() => stream.result, CapsuleError);
    const info = await m.info("a");
    assertEquals([info.version, info.tokens], [before.version, before.tokens]);
  });

  t("recall from an empty memory is refused", async (m) => {
    await m.open("a");
    const e = await assertRejects(() => m.recall("a", OPTS).result, CapsuleError);
    assertEquals(e.code, "invalid_argument");
  });
}

Deno.test("the HTTP client raises typed exceptions for memory errors", async () => {
  const cap = await testCapsule();
  const app = createSidecarApp({ engine: cap.engine, store: new MemoryStore() });
  const c = new CapsuleClient({ fetch: async (req) => await app.fetch(req) });
  await c.open("a");
  const e = await assertRejects(() => c.rewind("a", "missing"), CheckpointNotFoundError);
  assertEquals(e.status, 404);
  const e2 = await assertRejects(() => c.checkpoint("a", "bad name!"), CapsuleError);
  assertEquals([e2.code, (e2 as unknown as { status: number }).status], ["invalid_request", 422]);
});

Deno.test("moveMemory carries a session and its checkpoints to another sidecar, which continues identically", async () => {
  const cap = await testCapsule();
  const clientOf = (store: MemoryStore) => {
    const app = createSidecarApp({ engine: cap.engine, store });
    return new CapsuleClient({ fetch: async (req) => await app.fetch(req) });
  };
  const here = clientOf(new MemoryStore());
  const there = clientOf(new MemoryStore());
  await here.open("agent");
  await here.remember("agent", PROMPT);
  await here.checkpoint("agent", "early");
  await here.recall("agent", OPTS).result;
  await here.checkpoint("agent", "late");
  await here.remember("agent", " Latest thing.");

  const moved = await moveMemory(here, there, "agent", { as: "agent-moved" });
  assertEquals(moved.tokens, (await here.info("agent")).tokens);
  assertEquals(
    (await there.checkpoints("agent-moved")).map((c) => [c.name, c.tokens]),
    (await here.checkpoints("agent")).map((c) => [c.name, c.tokens]),
  );
  const a = await here.recall("agent", OPTS).result;
  const b = await there.recall("agent-moved", OPTS).result;
  assertEquals(b.outputIds, a.outputIds);
  await here.rewind("agent", "early");
  await there.rewind("agent-moved", "early");
  assertEquals(
    (await there.recall("agent-moved", OPTS).result).outputIds,
    (await here.recall("agent", OPTS).result).outputIds,
  );
  assertEquals(
    await there.getCheckpointCapsule("agent-moved", "late"),
    await here.getCheckpointCapsule("agent", "late"),
  );
});

Deno.test("memory resumes a session's latest version from this process's cache, and re-reads a version another writer made", async () => {
  const cap = await testCapsule();
  const inner = new MemoryStore();
  let gets = 0;
  const store: SessionStore = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === "get") {
        return (...a: unknown[]) => (gets++, (v as (...x: unknown[]) => unknown).apply(target, a));
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  try {
    const mem = new Memory(cap, store);
    const { id } = await mem.create(PROMPT);
    await mem.remember(id, " It is blue.");
    await mem.recall(id, { maxTokens: 3, temperature: 0 }).result;
    await mem.remember(id, " And small.");
    assertEquals(gets, 0, "every load after our own commits came from the cache");

    // Another writer (a second process: its own Capsule, so its own cache) commits a new version.
    const other = CapsuleClass.fromEngine(cap.engine);
    await new Memory(other, store).remember(id, " Another process wrote this.");
    const before = gets;
    const mine = await mem.recall(id, { maxTokens: 3, temperature: 0 }).result;
    assertEquals(gets - before, 1, "the newer version was read from the store");
    // Same as a process that never cached anything.
    const head = await store.head("default", id);
    const snap = await cap.readCapsule((await inner.get("default", id))!.capsule);
    assertEquals(head!.version, mine.version);
    assertEquals(snap.tokens.length, mine.tokens);
  } finally {
    // The capsule is shared by this file's tests; nothing to close.
  }
});
