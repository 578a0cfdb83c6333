import { assertEquals, assertThrows } from "@std/assert";
import { ConfigError, DEFAULT_MODEL_DIR } from "../server/config.ts";
import { defaultDataDir, defaultSocketPath, parseSidecarConfig } from "./config.ts";

Deno.test("defaults: socket in XDG_RUNTIME_DIR, KV store in the data dir, default model, auto backend", () => {
  const c = parseSidecarConfig([], { XDG_RUNTIME_DIR: "/run/user/1000", HOME: "/home/ada" })!;
  assertEquals(c.listen, { socket: "/run/user/1000/capsule.sock" });
  assertEquals(c.dataDir, "/home/ada/.local/share/capsule");
  assertEquals(c.storeUrl, "kv:/home/ada/.local/share/capsule/memory.kvdb");
  assertEquals(c.modelDir, DEFAULT_MODEL_DIR);
  assertEquals(c.backend, "auto");
  assertEquals(c.gpu, {});
  assertEquals(c.tokens.size, 0);
});

Deno.test("the sidecar takes the node's WebGPU storage choices and refuses others", () => {
  const c = parseSidecarConfig(["--gpu-weights", "int8", "--kv-cache", "f16"], {})!;
  assertEquals(c.gpu, { weights: "int8", kvCache: "f16" });
  assertThrows(() => parseSidecarConfig(["--kv-cache", "f8"], {}), ConfigError, "must be f32 or f16");
});

Deno.test("without XDG variables the socket is ./capsule.sock and data falls back to HOME, then ./.capsule", () => {
  assertEquals(defaultSocketPath({}), "./capsule.sock");
  assertEquals(defaultDataDir({ XDG_DATA_HOME: "/d/" }), "/d/capsule");
  assertEquals(defaultDataDir({}), "./.capsule");
});

Deno.test("flags beat the environment; --store replaces the data dir", () => {
  const c = parseSidecarConfig(
    ["--socket", "/tmp/a.sock", "--model", "/m", "--store", "memory:", "--backend", "cpu"],
    { CAPSULE_SOCKET: "/tmp/env.sock", CAPSULE_MODEL: "/env-model", CAPSULE_DATA_DIR: "/data" },
  )!;
  assertEquals(c.listen, { socket: "/tmp/a.sock" });
  assertEquals([c.modelDir, c.storeUrl, c.dataDir, c.backend], ["/m", "memory:", null, "cpu"]);
  const e = parseSidecarConfig([], { CAPSULE_SOCKET: "/tmp/env.sock", CAPSULE_DATA_DIR: "/data/" })!;
  assertEquals([e.listen, e.storeUrl], [{ socket: "/tmp/env.sock" }, "kv:/data/memory.kvdb"]);
});

Deno.test("--port serves localhost TCP instead of a socket", () => {
  assertEquals(parseSidecarConfig(["--port", "0"], {})!.listen, { port: 0, host: "127.0.0.1" });
  assertEquals(parseSidecarConfig(["--port", "9000", "--host", "::1"], {})!.listen, {
    port: 9000,
    host: "::1",
  });
  assertEquals(parseSidecarConfig([], { CAPSULE_SIDECAR_PORT: "7" })!.listen, { port: 7, host: "127.0.0.1" });
});

Deno.test("mistakes are ConfigErrors that say what to fix", () => {
  const bad: [string[], Record<string, string>, string][] = [
    [["--socket", "/a", "--port", "1"], {}, "not both"],
    [["--port", "70000"], {}, "0..65535"],
    [["--host", "::1"], {}, "--host only applies"],
    [["--backend", "tpu"], {}, "cpu, webgpu or auto"],
    [["--store", "ftp://x"], {}, "unknown scheme"],
    [["--nope"], {}, "Unknown option"],
    [[], { CAPSULE_TOKENS: "novalue" }, "CAPSULE_TOKENS"],
  ];
  for (const [args, env, msg] of bad) assertThrows(() => parseSidecarConfig(args, env), ConfigError, msg);
  assertEquals(parseSidecarConfig(["-h"], {}), null);
  assertEquals(parseSidecarConfig([], { CAPSULE_TOKENS: "t1=alice" })!.tokens, new Map([["t1", "alice"]]));
});
