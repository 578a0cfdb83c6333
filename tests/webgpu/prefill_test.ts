/**
 * The WebGPU backend's chunked prefill, through the backend, against the CPU reference
 * (`src/engine/forward.ts`) for all three families: random prompts of 1, 63, 64, 65 and 200
 * tokens, in one call and split in random pieces that continue the state, give the reference's
 * logits and final state (conv windows, delta-rule memories, KV rows) within f16-weight
 * tolerance. Also hidden-state capture and the tokens `generate` feeds before sampling.
 * (1000-token prompts and pieces mixed with decode steps: prefill_long_test.ts.)
 */
import { assertEquals, assertLess } from "@std/assert";
import { createState } from "../../src/engine/state.ts";
import { relL2 } from "../../src/engine/verify.ts";
import { argmax } from "../../src/engine/sampling.ts";
import type { WebGpuBackendOptions } from "../../src/backends/webgpu/backend.ts";
import { hasGpu } from "./helpers.ts";
import { checkLengths, type Fixture, openPair, randomIds, rng, stateError, TOL } from "./prefill_support.ts";

const LENGTHS = [1, 63, 64, 65, 200];

const CASES: { name: Fixture; seed: number; opts: WebGpuBackendOptions; note: string }[] = [
  { name: "qwen3_5-tiny", seed: 1, opts: {}, note: "GDN + gated attention" },
  // Internal pieces of 96 tokens: one input runs as several passes, each continuing the state.
  { name: "qwen3_next-tiny", seed: 2, opts: { prefillPiece: 96 }, note: "MoE, internal pieces of 96" },
  { name: "kimi_linear-tiny", seed: 3, opts: {}, note: "KDA + MLA + MoE" },
];

for (const c of CASES) {
  Deno.test({
    name: `${c.name} (${c.note}): chunked GPU prefill of ${
      LENGTHS.join(", ")
    } tokens, in one call and in random pieces, equals the CPU reference`,
    ignore: !hasGpu,
    fn: async () => {
      // prefillMinTokens 1: single tokens go through the chunked prefill too.
      const p = await openPair(c.name, { ...c.opts, prefillMinTokens: 1 });
      try {
        assertEquals(p.gpu.prefillMode, "chunked");
        const before = await p.gpu.stats();
        const fed = await checkLengths(p, c.seed, LENGTHS, c.name);
        const after = await p.gpu.stats();
        assertEquals(after.prefillTokens - before.prefillTokens, fed, "every token went through the prefill");
        assertEquals(after.stepsSubmitted, before.stepsSubmitted, "no decode steps were used");
      } finally {
        p.gpu.dispose();
      }
    },
  });
}

Deno.test({
  name: "kimi_linear-tiny: hidden states captured during a chunked prefill (an append) equal the reference's",
  ignore: !hasGpu,
  fn: async () => {
    const p = await openPair("kimi_linear-tiny", {});
    try {
      const rand = rng(5), V = p.gpu.config.vocabSize;
      const g = createState(p.gpu.config), r = createState(p.cpu.config);
      const head = randomIds(rand, 20, V);
      await p.gpu.forward(g, head, { logits: "none" });
      await p.cpu.forward(r, head, { logits: "none" });
      const ids = randomIds(rand, 65, V);
      const a = await p.gpu.forward(g, ids, { logits: "all", captureHidden: true });
      const b = await p.cpu.forward(r, ids, { logits: "all", captureHidden: true });
      assertEquals(a.hidden!.length, p.gpu.config.numLayers + 1);
      a.hidden!.forEach((h, i) => {
        const e = relL2(h, b.hidden![i]);
        assertLess(e, TOL, `hidden[${i}] rel_l2 ${e}`);
      });
      assertLess(relL2(a.logits, b.logits), TOL, "logits");
      assertLess(stateError(g, r, "after capture"), TOL, "state");
    } finally {
      p.gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "qwen3_next-tiny: generate feeds its pending prompt through the chunked prefill, then decodes greedily",
  ignore: !hasGpu,
  fn: async () => {
    const p = await openPair("qwen3_next-tiny", {});
    try {
      const prompt = randomIds(rng(6), 30, p.gpu.config.vocabSize);
      const N = 4;
      // The reference: the prompt, then greedy tokens fed one at a time (the last one stays pending).
      const r = createState(p.cpu.config);
      let logits = (await p.cpu.forward(r, prompt, { logits: "last" })).logits;
      const want: number[] = [];
      for (let k = 0; k < N; k++) {
        want.push(argmax(logits));
        if (k < N - 1) logits = (await p.cpu.forward(r, [want[k]], { logits: "last" })).logits;
      }
      const g = createState(p.gpu.config);
      const before = await p.gpu.stats();
      const got: number[] = [];
      const params = { temperature: 0, topK: 0, topP: 1, seed: 0 };
      const opts = { maxTokens: N, stopIds: [], firstPosition: prompt.length };
      for await (const t of p.gpu.generate(g, prompt, params, opts)) got.push(t);
      const after = await p.gpu.stats();
      assertEquals(got, want);
      assertEquals(after.prefillTokens - before.prefillTokens, prompt.length - 1, "prefilled tokens");
      await p.gpu.syncState(g);
      const e = stateError(g, r, "after generate");
      assertLess(e, TOL, `state rel_l2 ${e}`);
    } finally {
      p.gpu.dispose();
    }
  },
});
