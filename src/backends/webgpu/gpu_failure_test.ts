/**
 * GpuEngine.fail (in-process, no worker): once the device failed, work whose readback was still in
 * flight delivers nothing — a forward rejects instead of returning its logits, a running
 * generation rejects and sends no more tokens — and every later operation is refused. The worker
 * calls `fail` on an uncaptured error or the device's loss (tests/webgpu/gpu_failure_test.ts).
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "@std/assert";
import { CapsuleError } from "../../errors.ts";
import { loadModelConfig } from "../../model/config.ts";
import { fixture } from "../../../tests/support/fixtures.ts";
import { GpuEngine } from "./gpu_engine.ts";
import { testGpu } from "./harness.ts";
import { DecodeRuntime } from "./runtime.ts";

const gpu = await testGpu();

/** `p` rejects with `gpu_failed`. */
async function failsWithGpuFailed(p: () => Promise<unknown>): Promise<void> {
  const e = await assertRejects(p);
  assert(e instanceof CapsuleError && e.code === "gpu_failed", `expected gpu_failed, got ${e}`);
}

Deno.test({
  name: "after GpuEngine.fail, in-flight readbacks deliver nothing and every operation is refused",
  ignore: !gpu,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const config = await loadModelConfig(fixture("qwen3_5-tiny"));
    const rt = await DecodeRuntime.create(gpu!, config, { kind: "random", seed: 1 }, { maxSlots: 2 });
    const reported: CapsuleError[] = [];
    const engine = new GpuEngine(rt, { onFailure: (e) => reported.push(e) });
    const a = await engine.alloc(), b = await engine.alloc();
    await engine.randomize(a, 5, 64, 1);
    await engine.randomize(b, 5, 64, 2);
    const tokens: number[] = [];
    const gen = await engine.generate(
      {
        slot: b,
        pending: [3],
        temperature: 0,
        topK: 0,
        topP: 1,
        seed: 0,
        maxTokens: 50,
        stopIds: [],
        firstPosition: 6,
      },
      (t) => tokens.push(...t),
    );
    const forward = engine.forward({
      slot: a,
      ids: [1, 2, 3],
      logits: "last",
      captureHidden: false,
      download: 0,
    });
    await new Promise((r) => setTimeout(r, 0)); // the forward is submitted; its mapping is polled later
    const failure = engine.fail("injected by the test");
    const delivered = tokens.length;
    await Promise.all([failsWithGpuFailed(() => forward), failsWithGpuFailed(() => gen.done)]);
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(tokens.length, delivered, "no token after the failure");
    // Refused from now on; the first reason stays and is reported once.
    await failsWithGpuFailed(() => engine.download(a, 0));
    await failsWithGpuFailed(() => engine.alloc());
    assertStrictEquals(engine.fail("again"), failure);
    assertEquals(reported, [failure]);
    assert(failure.message.includes("injected by the test"), failure.message);
  },
});
