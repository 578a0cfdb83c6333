/**
 * Canary for Mesa's silent per-invocation loop cap (65,535 iterations in total): the probe must
 * see it, the engine must refuse a model whose kernels would exceed it, every kernel's declared
 * loop bound must stay under it for the supported shapes, and the loop-heaviest kernel (sampling)
 * must still be exact just below it.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { countLoop, LOOP_PROBE_ITERATIONS, probeLoopCap } from "../../src/backends/webgpu/device.ts";
import { Harness, randArray, rng, testGpu } from "../../src/backends/webgpu/harness.ts";
import {
  DecodeRuntime,
  kernelLoopBounds,
  sampleBlocks,
  samplerLoopBound,
  SH,
  SLOT_WORDS,
} from "../../src/backends/webgpu/runtime.ts";
import { loadModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { sampleToken } from "../../src/engine/sampling.ts";
import { MODELS } from "../../bench/decode.ts";
import { CapsuleError } from "../../src/errors.ts";

const gpu = await testGpu();
const MESA_CAP = 65535;
const FIXTURES = ["qwen3_5-tiny", "qwen3_5-tiny-hub", "qwen3_next-tiny", "kimi_linear-tiny"];

Deno.test({
  name: "loop-cap probe counts loops exactly below the cap and reports the cap above it",
  ignore: !gpu,
  fn: async () => {
    assertEquals(await countLoop(gpu!.device, 1000), 1000);
    const counted = await countLoop(gpu!.device, LOOP_PROBE_ITERATIONS);
    const cap = await probeLoopCap(gpu!.device, LOOP_PROBE_ITERATIONS);
    if (counted < LOOP_PROBE_ITERATIONS) {
      // A capped driver (lavapipe/llvmpipe in CI): the engine must know the cap it measured.
      assertEquals(cap, counted);
      assertEquals(gpu!.loopCap, counted);
      assert(counted <= MESA_CAP + 1 && counted > 60000, `cap ${counted}`);
    } else {
      assertEquals(cap, Infinity);
    }
    // Mesa's budget is ~65,535 iterations (±1 or 2 with several loops): the probe must see it.
    if (/llvmpipe|lavapipe/i.test(gpu!.adapterName)) {
      assert(Math.abs(gpu!.loopCap - MESA_CAP) <= 2, `the probe missed Mesa's cap (${gpu!.loopCap})`);
    }
  },
});

Deno.test("every kernel's per-invocation loop count stays under Mesa's cap for the fixtures and benchmark shapes", async () => {
  const configs = [
    ...await Promise.all(
      FIXTURES.map((f) =>
        loadModelConfig(`${new URL("../../../shared/fixtures/", import.meta.url).pathname}${f}`)
      ),
    ),
    ...Object.values(MODELS).map((m) => parseModelConfig(m.raw)),
  ];
  for (const c of configs) {
    for (const [kernel, n] of Object.entries(kernelLoopBounds(c))) {
      assert(
        n < MESA_CAP * 0.95,
        `${c.modelType} ${c.hiddenSize}: ${kernel} loops ${n} times per invocation`,
      );
    }
  }
});

Deno.test({
  name: "a model whose sampling loops would pass the driver's cap is refused, not run with wrong results",
  ignore: !gpu || !Number.isFinite(gpu.loopCap),
  fn: async () => {
    const big = parseModelConfig({ ...MODELS["tiny-qwen"].raw, vocab_size: 8_000_000 });
    assert(samplerLoopBound(big.vocabSize) > gpu!.loopCap);
    const e = await assertRejects(
      () => DecodeRuntime.create(gpu!, big, { kind: "random", seed: 1 }),
      CapsuleError,
    );
    assertEquals((e as CapsuleError).code, "unsupported_model");
  },
});

Deno.test({
  name: "sampling stays exact at the largest vocabulary under the cap (500k logits)",
  ignore: !gpu,
  fn: async () => {
    const V = 500_000;
    assert(samplerLoopBound(V) < MESA_CAP);
    const h = new Harness(gpu!);
    try {
      const r = rng(71);
      const params = [
        { temperature: 0.9, topK: 0, topP: 0.8, seed: 5 },
        { temperature: 1.1, topK: 1000, topP: 1, seed: 6 },
        { temperature: 0, topK: 0, topP: 1, seed: 0 },
      ];
      const logits = randArray(r, params.length * V, -6, 6);
      const slots = h.slots(
        params.map((p, i) => ({
          TEMP: p.temperature,
          TOPK: p.topK,
          TOPP: p.topP,
          SEED: p.seed,
          CBASE: 9 + i,
          MAXTOK: 5,
        })),
      );
      // The decode step's two dispatches: per-block argmax, then sampling.
      const d = { ADVANCE: 0, V, LSTRIDE: V, RING: 4 };
      const step = h.stepTable([0, 1, 2], 4), lb = h.buffer(logits);
      const part = h.buffer(params.length * sampleBlocks(V) * 8);
      h.run("sample.wgsl", { ...d, ARGMAX: 1, SAMPLE: 0 }, "rwrw", [step, slots, lb, part], [
        sampleBlocks(V),
        params.length,
      ]);
      h.run("sample.wgsl", { ...d, ARGMAX: 0, SAMPLE: 1 }, "rwrwr", [step, slots, lb, h.buffer(64), part], [
        params.length,
      ]);
      const hdr = await h.u32(slots, params.length * SLOT_WORDS);
      params.forEach((p, b) => {
        assertEquals(
          hdr[b * SLOT_WORDS + SH.TOKEN],
          sampleToken(logits.subarray(b * V, (b + 1) * V), p, 9 + b),
          JSON.stringify(p),
        );
      });
    } finally {
      h.dispose();
    }
  },
});
