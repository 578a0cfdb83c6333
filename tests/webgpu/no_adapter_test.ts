/**
 * Without any GPU adapter the WebGPU backend fails with `no_gpu_adapter` and a clear message,
 * and `Engine.load(…, { backend: "auto" })` falls back to the CPU backend, which still works.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { createWebGpuBackend } from "../../src/backends/webgpu/backend.ts";
import { loadModelConfig } from "../../src/model/config.ts";
import { Checkpoint } from "../../src/model/safetensors.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fixture } from "../support/fixtures.ts";
import { Engine, gpuAdapterKind } from "../../src/engine/engine.ts";

Deno.test("with no adapter (injected) the backend fails with no_gpu_adapter", async () => {
  const dir = fixture("qwen3_5-tiny");
  const config = await loadModelConfig(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    const e = await assertRejects(
      () => createWebGpuBackend(config, ckpt, dir, { forceNoAdapter: true }),
      CapsuleError,
    );
    assertEquals((e as CapsuleError).code, "no_gpu_adapter");
    assert(/no WebGPU adapter/.test((e as CapsuleError).message), (e as CapsuleError).message);
  } finally {
    ckpt.close();
  }
});

Deno.test("in a process whose WebGPU has no adapter, webgpu says no_gpu_adapter and auto falls back to the CPU", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./no_adapter_child.ts", import.meta.url).pathname, fixture("qwen3_5-tiny")],
    env: { DENO_WEBGPU_BACKEND: "no-such-backend", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder().decode(stdout).trim().split("\n").pop() ?? "";
  assertEquals(code, 0, new TextDecoder().decode(stderr));
  const r = JSON.parse(text);
  assertEquals(r.webgpu.code, "no_gpu_adapter", text);
  assertEquals(r.auto.backend, "cpu", text);
  assertEquals(r.auto.tokens.length, 3, text);
});

Deno.test("auto decodes on the CPU when the only adapter is a software fallback, on WebGPU for a hardware GPU", async () => {
  const kind = await gpuAdapterKind();
  const engine = await Engine.load(fixture("qwen3_5-tiny"), { backend: "auto" });
  try {
    assertEquals(engine.backend.name, kind === "hardware" ? "webgpu" : "cpu", `adapter kind ${kind}`);
  } finally {
    engine.dispose();
  }
  // An explicit request still gets WebGPU on a software adapter (tests and benchmarks rely on it).
  if (kind === "software") {
    const gpu = await Engine.load(fixture("qwen3_5-tiny"), { backend: "webgpu" });
    try {
      assertEquals(gpu.backend.name, "webgpu");
    } finally {
      gpu.dispose();
    }
  }
});
