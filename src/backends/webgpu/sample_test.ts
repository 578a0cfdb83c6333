/**
 * sample.wgsl (block argmax, then sampling) against sampleToken() (greedy, temperature, top-k,
 * top-p, counter-based RNG) on random logits with ragged vocabulary sizes, including logits with
 * many exact ties and ties at the maximum spread over several blocks, each of its two T > 0
 * paths (sorted candidates, radix descent) alone as well as together, and the bookkeeping the
 * decode loop relies on: next token written where the embedding reads it, output ring, position
 * advance, stop ids, max tokens, and stopped entries left untouched.
 */
import { relative } from "node:path";
import { assert, assertEquals } from "@std/assert";
import { hash32, sampleToken, type SamplingParams, uniform } from "../../engine/sampling.ts";
import { Harness, randArray, rng, testGpu } from "./harness.ts";
import { SAMPLE_BLOCK, sampleBlocks, SH, SLOT_WORDS } from "./runtime.ts";

const gpu = await testGpu();
const RING = 16;

/**
 * The two sampling dispatches of a decode step for `n` entries, as the runtime records them:
 * ARGMAX over (blocks, n) into a partials buffer, then SAMPLE over n.
 */
function runSample(
  h: Harness,
  V: number,
  lstride: number,
  n: number,
  buffers: { step: GPUBuffer; slots: GPUBuffer; logits: GPUBuffer; ring: GPUBuffer },
  file = "sample.wgsl",
): void {
  const d = { V, LSTRIDE: lstride, RING, ADVANCE: 0 };
  const part = h.buffer(n * sampleBlocks(V) * 8);
  h.run(file, { ...d, ARGMAX: 1, SAMPLE: 0 }, "rwrw", [
    buffers.step,
    buffers.slots,
    buffers.logits,
    part,
  ], [sampleBlocks(V), n]);
  h.run(file, { ...d, ARGMAX: 0, SAMPLE: 1 }, "rwrwr", [
    buffers.step,
    buffers.slots,
    buffers.logits,
    buffers.ring,
    part,
  ], [n]);
}

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
          runSample(h, V, V, B, {
            step: h.stepTable(PARAMS.map((_, i) => i), 8),
            slots,
            logits: h.buffer(logits),
            ring: h.buffer(B * RING * 4),
          });
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

/** Where a ragged-vocabulary row puts its maximum (see {@link plantedRow}). */
type TiePattern = "spread" | "late" | "signed-zero" | "flat";

/**
 * A row of `V` logits on a 0.25 grid in [-4, 4] (so ties below the maximum too) whose maximum is
 * planted by `pattern`: "spread" = one value at several ids in different blocks, the last id and
 * one just past the first block among them; "late" = the maximum tied in the last two blocks only,
 * with the runner-up several times in the first; "signed-zero" = all negative but +0 and -0 at
 * several ids (equal maxima with different bits); "flat" = every logit equal.
 */
function plantedRow(r: () => number, V: number, pattern: TiePattern): Float32Array {
  const row = randArray(r, V, -4, 4).map((x) => Math.round(x * 4) / 4);
  const ids = (n: number, lo: number, hi: number) =>
    Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
  switch (pattern) {
    case "spread":
      for (const i of [...ids(6, 0, V), V - 1, Math.min(V - 1, SAMPLE_BLOCK + 3)]) row[i] = 6;
      break;
    case "late":
      for (const i of ids(3, 0, Math.min(V, SAMPLE_BLOCK))) row[i] = 5.5;
      for (const i of ids(4, Math.max(0, V - 2 * SAMPLE_BLOCK), V)) row[i] = 6;
      break;
    case "signed-zero":
      for (let i = 0; i < V; i++) row[i] = -0.25 - Math.abs(row[i]);
      ids(6, 0, V).forEach((i, j) => row[i] = j % 2 ? 0 : -0);
      break;
    case "flat":
      row.fill(1.5);
      break;
  }
  return row;
}

Deno.test({
  name:
    "block argmax then sampling matches sampleToken on ragged vocabularies with maximum ties across blocks",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(97);
      const B = PARAMS.length;
      const patterns: TiePattern[] = ["spread", "late", "signed-zero", "flat"];
      for (const V of [1, 255, 257, 2047, 2049, 4099, 70001]) {
        // Rows padded past V with a huge logit: reading past the vocabulary would pick it.
        const lstride = V + 5;
        for (const [round, pattern] of patterns.entries()) {
          const logits = new Float32Array(B * lstride).fill(1e30);
          const rows = PARAMS.map((_, b) => {
            const row = plantedRow(r, V, pattern);
            logits.set(row, b * lstride);
            return row;
          });
          const base = 7 + 31 * round + V;
          const slots = h.slots(PARAMS.map((p, i) => ({
            TEMP: p.temperature,
            TOPK: p.topK,
            TOPP: p.topP,
            SEED: p.seed,
            CBASE: base + i,
            GEN: round,
            MAXTOK: 1000,
          })));
          runSample(h, V, lstride, B, {
            step: h.stepTable(PARAMS.map((_, i) => i), B),
            slots,
            logits: h.buffer(logits),
            ring: h.buffer(B * RING * 4),
          });
          const hdr = await h.u32(slots, B * SLOT_WORDS);
          PARAMS.forEach((p, b) => {
            assertEquals(
              hdr[b * SLOT_WORDS + SH.TOKEN],
              sampleToken(rows[b], p, base + b + round),
              `V=${V} ${pattern} ${JSON.stringify(p)}`,
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
  name: "greedy over more blocks than the sampling workgroup has threads keeps the lowest id among maxima",
  ignore: !gpu,
  fn: async () => {
    // Past 256 blocks one thread of SAMPLE folds several partials (blocks j and j + 256): its
    // own tie rule then decides, not only the tree's.
    const V = 260 * SAMPLE_BLOCK + 3001;
    assert(sampleBlocks(V) === 262);
    const h = new Harness(gpu!);
    try {
      const r = rng(5);
      const plant = [
        [3 * SAMPLE_BLOCK + 17, 259 * SAMPLE_BLOCK + 1], // same thread, first block wins
        [259 * SAMPLE_BLOCK + 1, 3 * SAMPLE_BLOCK + 17, V - 1], // listed out of order
        [256 * SAMPLE_BLOCK + 5, V - 1], // both in blocks past 256
        [V - 1], // last id alone
        [0, 256 * SAMPLE_BLOCK, V - 1], // block 0 and its fold partner
      ];
      assert(plant.flat().every((i) => i < V));
      const n = plant.length;
      const logits = randArray(r, n * V, -4, 4);
      plant.forEach((ids, b) => ids.forEach((i) => logits[b * V + i] = 9));
      const slots = h.slots(plant.map(() => ({ TEMP: 0, MAXTOK: 10 })));
      runSample(h, V, V, n, {
        step: h.stepTable(plant.map((_, i) => i), n),
        slots,
        logits: h.buffer(logits),
        ring: h.buffer(n * RING * 4),
      });
      const hdr = await h.u32(slots, n * SLOT_WORDS);
      plant.forEach((ids, b) => assertEquals(hdr[b * SLOT_WORDS + SH.TOKEN], Math.min(...ids), `entry ${b}`));
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
      runSample(h, V, V, n, {
        step: h.stepTable(seeds.map((_, i) => i), n),
        slots,
        logits: h.buffer(new Float32Array(n * V)),
        ring: h.buffer(n * RING * 4),
      });
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
      runSample(h, V, V, 4, { step: h.stepTable([0, 1, 2, 3], 8), slots, logits: h.buffer(logits), ring });
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
      h.run("sample.wgsl", { ARGMAX: 0, SAMPLE: 0, ADVANCE: 1, RING }, "rwrw", [
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

/** Which of sample.wgsl's two T > 0 paths a variant keeps (see {@link kernelVariant}). */
type SamplePath = "both" | "candidates" | "radix";

/**
 * sample.wgsl with one T > 0 path switched off (its CANDIDATE_PATH / RADIX_PATH constant),
 * written to a temporary file: the returned name is that file as the kernel loader resolves
 * names (relative to kernels/). With the radix path off, cases the candidates cannot decide
 * return 0xffffffff.
 */
function kernelVariant(path: SamplePath): { file: string; remove: () => void } {
  if (path === "both") return { file: "sample.wgsl", remove: () => {} };
  const dir = new URL("../../../kernels/", import.meta.url);
  const src = Deno.readTextFileSync(new URL("sample.wgsl", dir));
  const line = `const ${path === "radix" ? "CANDIDATE_PATH" : "RADIX_PATH"}: bool = true;`;
  assert(src.includes(line), `sample.wgsl lacks "${line}"`);
  const tmp = Deno.makeTempFileSync({ suffix: ".wgsl" });
  Deno.writeTextFileSync(tmp, src.replace(line, line.replace("true", "false")));
  return { file: relative(dir.pathname, tmp), remove: () => Deno.removeSync(tmp) };
}

/** An approximate standard normal (sum of four uniforms, rescaled). */
function gauss(r: () => number): number {
  return (r() + r() + r() + r() - 2) * Math.sqrt(3);
}

/**
 * An LLM-like row: a bulk 12 or more below a few peaked tokens (two of them tied, in different
 * blocks when V allows), on a 1/16 grid (ties in the bulk too), shifted by a random offset.
 */
function peakedRow(r: () => number, V: number): Float32Array {
  const row = new Float32Array(V);
  const off = r() * 10 - 5;
  for (let i = 0; i < V; i++) row[i] = Math.round((-12 - 2 * Math.abs(gauss(r))) * 16) / 16 + off;
  const peaks = [0, -0.5, -1, -1, -2, -3];
  peaks.forEach((p, j) => row[Math.floor(((j + r()) / peaks.length) * V)] = p + off);
  return row;
}

const NOT_DECIDED = 0xffffffff;

Deno.test({
  name:
    "each T > 0 path alone and both together pick sampleToken's token (the radix path's on exact ties); the candidate path decides the common cases",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    const paths = (["radix", "candidates", "both"] as SamplePath[]).map((p) => ({ p, ...kernelVariant(p) }));
    try {
      const r = rng(2024);
      let decided = 0;
      for (const V of [3001, 20011]) {
        // 32 entries: temperatures from tiny to hot, top-k below, at and above the 1024
        // candidates and ≥ V, top-p from 0.5 to 1, each with its own seed.
        const params: SamplingParams[] = Array.from({ length: 32 }, (_, b) => ({
          temperature: [0.7, 1, 0.3, 1e-5, 2, 0.7, 1, 0.5][b % 8],
          topK: [0, 1, 20, 64, 0, 1500, V, V + 5, 0, 40, 0, 1024][b % 12],
          topP: [1, 0.9, 0.5, 0.999, 0.95][b % 5],
          seed: Math.floor(r() * 2 ** 32),
        }));
        // "tied" and "flat" rows: every logit on a 0.25 grid, so top-k and top-p cut through groups of equal
        // weights whose f32 running sums are exact where sampleToken's f64 sums of quotients
        // round (ten weights of 1/20 fall short of 0.5): there the paths must agree with each other.
        for (const kind of ["peaked", "uniform", "tied", "flat"] as const) {
          const rows = params.map(() =>
            kind === "peaked"
              ? peakedRow(r, V)
              : kind === "flat"
              ? new Float32Array(V).fill(-0.5)
              : randArray(r, V, -4, 4).map((x) => kind === "tied" ? Math.round(x * 4) / 4 : x)
          );
          const logits = new Float32Array(params.length * V);
          rows.forEach((row, b) => logits.set(row, b * V));
          const cpu = params.map((p, b) => sampleToken(rows[b], p, 300 + b));
          let radix: Uint32Array | undefined;
          for (const { p: path, file } of paths) {
            const slots = h.slots(params.map((p, i) => ({
              TEMP: p.temperature,
              TOPK: p.topK,
              TOPP: p.topP,
              SEED: p.seed,
              CBASE: 300 + i,
              MAXTOK: 10,
            })));
            runSample(h, V, V, params.length, {
              step: h.stepTable(params.map((_, i) => i), params.length),
              slots,
              logits: h.buffer(logits),
              ring: h.buffer(params.length * RING * 4),
            }, file);
            const hdr = await h.u32(slots, params.length * SLOT_WORDS);
            const got = params.map((_, b) => hdr[b * SLOT_WORDS + SH.TOKEN]);
            const rad = radix ??= Uint32Array.from(got);
            const want = kind === "tied" || kind === "flat" ? [...rad] : cpu;
            params.forEach((p, b) => {
              const what = `${path} V=${V} ${kind} ${JSON.stringify(p)}`;
              if (path !== "candidates") return assertEquals(got[b], want[b], what);
              const topK = p.topK > 0 && p.topK < V;
              // Must leave undecided: flat rows (every logit in the first class) and top-k
              // beyond what it collects.
              if (kind === "flat" || (topK && p.topK > 1024)) return assertEquals(got[b], NOT_DECIDED, what);
              // Must decide: a small top-k, or a nucleus inside the peaks.
              const common = kind === "peaked" && p.temperature <= 1 &&
                ((topK && p.topK <= 64) || (!topK && p.topP <= 0.95));
              if (common) assert(got[b] !== NOT_DECIDED, `undecided: ${what}`);
              if (got[b] !== NOT_DECIDED) {
                assertEquals(got[b], want[b], what);
                assertEquals(got[b], rad[b], what);
                decided++;
              }
            });
          }
        }
      }
      assert(decided > 100, `the candidate path decided only ${decided} cases`);
    } finally {
      paths.forEach((p) => p.remove());
      h.dispose();
    }
  },
});
