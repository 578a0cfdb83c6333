/** Node configuration: flags, environment fallbacks, and clear refusals of bad values. */
import { assertEquals, assertThrows } from "@std/assert";
import {
  checkModelDir,
  ConfigError,
  DEFAULT_MODEL_DIR,
  parseCapsuleKey,
  parseConfig,
} from "../../src/server/config.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

const noFile = (p: string): string => {
  throw new Error(`no file ${p}`);
};

Deno.test("defaults: repo model, Deno KV file store, port 8080, auto backend, no auth, no key", () => {
  const c = parseConfig([], {}, noFile)!;
  assertEquals(c.modelDir, `${REPO_ROOT}/models/capsule-qwen35-tiny`);
  assertEquals(c.modelDir, DEFAULT_MODEL_DIR);
  assertEquals([c.storeUrl, c.port, c.host, c.backend], ["kv:./capsule.kvdb", 8080, "127.0.0.1", "auto"]);
  assertEquals(c.tokens.size, 0);
  assertEquals(c.capsuleKey, null);
  assertEquals(c.gpu, {});
});

Deno.test("WebGPU weights and KV cache storage come from flags or the environment", () => {
  const c = parseConfig(
    ["--kv-cache", "f16"],
    { CAPSULE_GPU_WEIGHTS: "int8", CAPSULE_KV_CACHE: "f32" },
    noFile,
  )!;
  assertEquals(c.gpu, { weights: "int8", kvCache: "f16" });
});

Deno.test("flags win over environment; environment fills in the rest", () => {
  const env = {
    CAPSULE_MODEL: "/env/model",
    CAPSULE_STORE: "redis://10.0.0.1:6379",
    PORT: "9000",
    CAPSULE_BACKEND: "webgpu",
    CAPSULE_TOKENS: "tokA=tenant1, tokB=tenant2",
    CAPSULE_DEADLINE_MS: "5000",
  };
  const c = parseConfig(["--model", "/flag/model", "--port", "0", "--backend", "cpu"], env, noFile)!;
  assertEquals([c.modelDir, c.storeUrl, c.port, c.backend], [
    "/flag/model",
    "redis://10.0.0.1:6379",
    0,
    "cpu",
  ]);
  assertEquals([...c.tokens], [["tokA", "tenant1"], ["tokB", "tenant2"]]);
  assertEquals(c.limits, { deadlineMs: 5000 });
});

Deno.test("tokens from a JSON file and from inline JSON", () => {
  const c = parseConfig(
    ["--tokens-file", "/t.json"],
    { CAPSULE_TOKENS: '{"x": "t3"}' },
    () => '{"k1": "t1", "k2": "t2"}',
  )!;
  assertEquals(Object.fromEntries(c.tokens), { k1: "t1", k2: "t2", x: "t3" });
});

Deno.test("bad values are ConfigErrors that say what to fix", () => {
  const bad: [string[], Record<string, string>, RegExp][] = [
    [["--port", "70000"], {}, /--port/],
    [["--port", "-1"], {}, /--port/],
    [["--backend", "tpu"], {}, /cpu, webgpu or auto/],
    [["--store", "s3://bucket"], {}, /unknown scheme/],
    [["--bogus"], {}, /bogus/],
    [[], { CAPSULE_TOKENS: "novalue" }, /token=tenant/],
    [[], { CAPSULE_TOKENS: "tok=bad tenant" }, /tenant/],
    [[], { CAPSULE_KEY: "abcd" }, /CAPSULE_KEY/],
    [["--tokens-file", "/missing"], {}, /cannot read tokens file/],
    [["--deadline-ms", "0"], {}, /deadline/],
    [["--kv-cache", "bf16"], {}, /--kv-cache\/CAPSULE_KV_CACHE must be f32 or f16/],
    [[], { CAPSULE_GPU_WEIGHTS: "int4" }, /--gpu-weights\/CAPSULE_GPU_WEIGHTS must be f16 or int8/],
  ];
  for (const [args, env, msg] of bad) {
    const e = assertThrows(() => parseConfig(args, env, noFile), ConfigError);
    assertEquals(msg.test(e.message), true, `${e.message} !~ ${msg}`);
  }
  assertEquals(parseConfig(["--help"], {}, noFile), null);
});

Deno.test("capsule keys: 64 hex digits or base64 of 32 bytes", () => {
  const raw = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
  const hex = Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
  assertEquals(parseCapsuleKey(hex), raw);
  assertEquals(parseCapsuleKey(btoa(String.fromCharCode(...raw))), raw);
  assertEquals(
    parseCapsuleKey(
      btoa(String.fromCharCode(...raw)).replace(/=$/, "").replace(/\+/g, "-").replace(/\//g, "_"),
    ),
    raw,
  );
  assertThrows(() => parseCapsuleKey(hex.slice(2)), ConfigError);
  assertThrows(() => parseCapsuleKey(btoa("short")), ConfigError);
});

Deno.test("a missing model folder names the folder and --model", () => {
  assertThrows(() => checkModelDir("/nonexistent/model"), ConfigError, "/nonexistent/model not found");
  assertThrows(() => checkModelDir("/nonexistent/model"), ConfigError, "--model");
});

Deno.test("the start command exits 2 with a clear message on bad configuration", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", `${REPO_ROOT}/src/server/main.ts`, "--model", "/nonexistent/model"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 2);
  const err = new TextDecoder().decode(out.stderr);
  assertEquals(/model folder \/nonexistent\/model not found.*--model/.test(err), true, err);
});
