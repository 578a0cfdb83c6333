import {
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { CapsuleError } from "../../src/errors.ts";
import { KvStore, MemoryStore, openStore, parseStoreUrl } from "../../src/store/mod.ts";

Deno.test("store URLs parse into their kind", () => {
  assertEquals(parseStoreUrl("memory:"), { kind: "memory" });
  assertEquals(parseStoreUrl("memory://"), { kind: "memory" });
  assertEquals(parseStoreUrl("kv:./data/capsule.kvdb"), { kind: "kv", path: "./data/capsule.kvdb" });
  assertEquals(parseStoreUrl("kv:/abs/x.kvdb"), { kind: "kv", path: "/abs/x.kvdb" });
  assertEquals(parseStoreUrl("kv::memory:"), { kind: "kv", path: ":memory:" });
  assertEquals(parseStoreUrl("redis://127.0.0.1:6379"), { kind: "redis", url: "redis://127.0.0.1:6379" });
  assertEquals(parseStoreUrl("redis://h:1/2"), { kind: "redis", url: "redis://h:1/2" });
  assertEquals(parseStoreUrl("rediss://:pw@h:1/0?namespace=prod-1"), {
    kind: "redis",
    url: "rediss://:pw@h:1/0",
    namespace: "prod-1",
  });
});

Deno.test("bad store URLs are invalid_store_url listing the supported schemes", () => {
  const bad = [
    "",
    "memory",
    "postgres://x",
    "/tmp/x.kvdb",
    "kv:",
    "redis://",
    "redis://h:1/abc",
    "redis://h:1/0?db=1",
    "redis://h:1?namespace=a:b",
  ];
  for (const url of bad) {
    const e = assertThrows(() => parseStoreUrl(url), CapsuleError);
    assertEquals(e.code, "invalid_store_url", url);
    for (const scheme of ["memory:", "kv:", "redis://"]) assertStringIncludes(e.message, scheme);
  }
});

Deno.test("openStore opens memory and kv stores and refuses bad URLs", async () => {
  const m = await openStore("memory:");
  assertInstanceOf(m, MemoryStore);
  await m.close();
  const k = await openStore("kv::memory:");
  assertInstanceOf(k, KvStore);
  await k.commit("t", "s", new Uint8Array([1, 2, 3]), {
    model: "m",
    tokens: 3,
    createdAt: "a",
    updatedAt: "b",
  }, null);
  assertEquals((await k.get("t", "s"))?.capsule, new Uint8Array([1, 2, 3]));
  await k.close();
  const e = await assertRejects(() => openStore("ftp://x"), CapsuleError);
  assertEquals(e.code, "invalid_store_url");
  assertStringIncludes(e.message, '"ftp:"');
});
