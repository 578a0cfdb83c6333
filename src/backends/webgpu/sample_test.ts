/**
 * sample.wgsl against sampleToken() (greedy, temperature, top-k, top-p, counter-based RNG) on
 * random logits with ragged vocabulary sizes, including logits with many exact ties, and the
 * bookkeeping the decode loop relies on: next token written where the embedding reads it, output
 * ring, position advance, stop ids, max tokens, and stopped entries left untouched.
 */
import { assert, assertEquals } from "@std/assert";
import { hash32, sampleToken, type SamplingParams, uniform } from "../../engine/sampling.ts";
import { Harness, randArray, rng, testGpu } from "./harness.ts";
import { SH, SLOT_WORDS } from "./runtime.ts";

const gpu = await testGpu();
const RING = 16;

const PARAMS: SamplingParams[] = [
  { temperature: 0, topK: 0, topP: 1, seed: 0 },
  { temperature: 0.7, topK: 40, topP: 0.9, seed: 1 },
  { temperature: 1.3, topK: 0, topP: 1, seed: 2 },
  { temperature: 1, topK: 1, topP: 1, seed: 3 },
  { temperature: 0.5, topK: 0, topP: 0.5, seed: 4 },
  { temperature: 2, topK: 7, topP: 0.95, seed: 0xdeadbeef },
];

Deno.test({
  name: "GPU sampling picks the same tokens as sampleToken for greedy, temperature, top-k and top-p",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(41);
      for (const V of [1003, 5003]) {
        for (let round = 0; round < 8; round++) {
          const B = PARAMS.length;
          const ties = round % 2 === 1;
          const logits = randArray(r, B * V, -4, 4).map((x) => ties ? Math.round(x * 2) / 2 : x);
          const base = 100 + round * 7;
          const slots = h.slots(PARAMS.map((p, i) => ({
            TEMP: p.temperature,
            TOPK: p.topK,
            TOPP: p.topP,
            SEED: p.seed,
            CBASE: base + i,
            GEN: round,
            MAXTOK: 1000,
          })));
          h.run("sample.wgsl", { SAMPLE: 1, ADVANCE: 0, V, LSTRIDE: V, RING }, "rwrw", [
            h.stepTable(PARAMS.map((_, i) => i), 8),
            slots,
            h.buffer(logits),
            h.buffer(B * RING * 4),
          ], [B]);
          const hdr = await h.u32(slots, B * SLOT_WORDS);
          PARAMS.forEach((p, b) => {
            const want = sampleToken(logits.subarray(b * V, (b + 1) * V), p, base + b + round);
            assertEquals(
              hdr[b * SLOT_WORDS + SH.TOKEN],
              want,
              `V=${V} round ${round} ${ties ? "(ties) " : ""}${JSON.stringify(p)}`,
            );
          });
        }
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name: "GPU RNG draws the same uniforms as uniform(seed, counter) (16 bits of each draw checked)",
  ignore: !gpu,
  fn: async () => {
    // With 65,536 equal logits at temperature 1 the sampled id is ⌊u · 65536⌋: the top 16 of the
    // 24 bits of u = uniform(seed, counter).
    const h = new Harness(gpu!);
    try {
      const n = 24, V = 65536;
      const seeds = Array.from({ length: n }, (_, i) => (i * 2654435761) >>> 0);
      const slots = h.slots(
        seeds.map((s, i) => ({ TEMP: 1, TOPK: 0, TOPP: 1, SEED: s, CBASE: i * 977, MAXTOK: 10 })),
      );
      h.run("sample.wgsl", { SAMPLE: 1, ADVANCE: 0, V, LSTRIDE: V, RING }, "rwrw", [
        h.stepTable(seeds.map((_, i) => i), n),
        slots,
        h.buffer(new Float32Array(n * V)),
        h.buffer(n * RING * 4),
      ], [n]);
      const hdr = await h.u32(slots, n * SLOT_WORDS);
      seeds.forEach((s, i) => {
        const want = Math.floor(uniform(s, i * 977) * V);
        assertEquals(
          hdr[i * SLOT_WORDS + SH.TOKEN],
          want,
          `seed ${s} counter ${i * 977}: hash ${hash32(s, i * 977)}`,
        );
      });
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name:
    "sampling step writes the next token, the ring entry and the position, and stops on stop ids and max tokens",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const V = 300;
      const logits = new Float32Array(4 * V);
      const top = [17, 42, 99, 5];
      top.forEach((t, b) => logits[b * V + t] = 10);
      const slots = h.slots([
        { POS: 10, GEN: 0, MAXTOK: 5, stops: [3, 42 + 1000] }, // continues
        { POS: 20, GEN: 1, MAXTOK: 5, stops: [42] }, // hits a stop id
        { POS: 30, GEN: 4, MAXTOK: 5 }, // reaches max tokens
        { POS: 40, GEN: 2, MAXTOK: 5, DONE: 1, TOKEN: 7 }, // already stopped: untouched
      ]);
      const ring = h.buffer(4 * RING * 4);
      h.run("sample.wgsl", { SAMPLE: 1, ADVANCE: 0, V, LSTRIDE: V, RING }, "rwrw", [
        h.stepTable([0, 1, 2, 3], 8),
        slots,
        h.buffer(logits),
        ring,
      ], [4]);
      const hdr = await h.u32(slots, 4 * SLOT_WORDS), rg = await h.u32(ring, 4 * RING);
      const f = (s: number, k: keyof typeof SH) => hdr[s * SLOT_WORDS + SH[k]];
      assertEquals([f(0, "TOKEN"), f(0, "POS"), f(0, "GEN"), f(0, "DONE"), rg[0 * RING + 0]], [
        17,
        11,
        1,
        0,
        17,
      ]);
      assertEquals([f(1, "TOKEN"), f(1, "POS"), f(1, "GEN"), f(1, "DONE"), rg[1 * RING + 1]], [
        42,
        21,
        2,
        1,
        42,
      ]);
      assertEquals([f(2, "TOKEN"), f(2, "POS"), f(2, "GEN"), f(2, "DONE"), rg[2 * RING + 4]], [
        99,
        31,
        5,
        1,
        99,
      ]);
      assertEquals([f(3, "TOKEN"), f(3, "POS"), f(3, "GEN"), f(3, "DONE"), rg[3 * RING + 2]], [
        7,
        40,
        2,
        1,
        0,
      ]);
      // The advance entry point moves live positions only.
      h.run("sample.wgsl", { SAMPLE: 0, ADVANCE: 1, RING }, "rwrw", [
        h.stepTable([0, 1, 2, 3], 8),
        slots,
        h.buffer(16),
        ring,
      ], [4]);
      const hdr2 = await h.u32(slots, 4 * SLOT_WORDS);
      assert(hdr2[0 * SLOT_WORDS + SH.POS] === 12 && hdr2[3 * SLOT_WORDS + SH.POS] === 40, "advance");
    } finally {
      h.dispose();
    }
  },
});
