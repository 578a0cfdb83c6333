/**
 * The WebGPU backend's chunked prefill on a 1000-token prompt (16 chunks of 64, attention over a
 * growing cache), in one call and in random pieces, against the CPU reference; and prefill pieces
 * interleaved with single-token decode steps, which share the same device-resident state.
 */
import { assertEquals } from "@std/assert";
import { hasGpu } from "./helpers.ts";
import {
  checkLengths,
  compareWithReference,
  openPair,
  randomIds,
  reference,
  rng,
} from "./prefill_support.ts";

Deno.test({
  name:
    "qwen3_5-tiny: a 1000-token chunked GPU prefill, in one call and in random pieces, equals the CPU reference",
  ignore: !hasGpu,
  fn: async () => {
    const p = await openPair("qwen3_5-tiny", {});
    try {
      await checkLengths(p, 7, [1000], "qwen3_5-tiny");
    } finally {
      p.gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "qwen3_5-tiny: prefill pieces mixed with single-token decode steps continue the state like the reference",
  ignore: !hasGpu,
  fn: async () => {
    const p = await openPair("qwen3_5-tiny", {}); // default: a single token runs as a decode step
    try {
      const pieces = [3, 1, 1, 64, 1, 70, 2, 1, 130];
      const total = pieces.reduce((a, b) => a + b, 0);
      const tokens = randomIds(rng(4), total, p.gpu.config.vocabSize);
      const before = await p.gpu.stats();
      await compareWithReference(p.gpu, await reference(p, tokens), tokens, pieces, "mixed");
      const after = await p.gpu.stats();
      const singles = pieces.filter((n) => n === 1).length;
      assertEquals(
        after.stepsSubmitted - before.stepsSubmitted,
        singles,
        "single tokens ran as decode steps",
      );
      assertEquals(after.prefillTokens - before.prefillTokens, total - singles, "the rest was prefilled");
    } finally {
      p.gpu.dispose();
    }
  },
});
