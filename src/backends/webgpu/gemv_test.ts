/**
 * The GEMV kernels against their CPU twin (`matvec` on the dequantised matrix, with
 * `rmsNormRows`, `gatedRmsNorm`'s 1/rms factor, SwiGLU and the residual add done on the CPU), on
 * random inputs with ragged sizes, f16 and int8 weights: gemv.wgsl at batch tiles 1-4 and the
 * register-blocked gemv_batched.wgsl at tiles 8, 16 and 32, as the runtime routes them. Also: an
 * entry's output is bit-identical whatever its tile, its neighbours and its place in the batch.
 */
import { assert, assertEquals } from "@std/assert";
import { matvec, rmsNormRows, silu } from "../cpu/ops.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";
import { type PackedMatrix, packMatrix, roundUp, unpackMatrix, type WeightFormat } from "./pack.ts";
import {
  GEMV_BLOCKED_MIN_TILE,
  GEMV_MIN_WORKGROUPS,
  GEMV_TALL_CHUNKS_IN_FLIGHT,
  GEMV_TALL_OUTPUTS,
  GEMV_TALL_TPR,
  gemvDefines,
  gemvGrid,
  gemvKernelSpec,
  gemvLaunchGrid,
  gemvPlan,
  gemvRowThreads,
  type GemvVariant,
} from "./runtime.ts";

const gpu = await testGpu();

type VariantName = "plain" | "rms" | "pair" | "add" | "heads";

interface Case {
  rows: number;
  cols: number;
  format: WeightFormat;
  variant: VariantName;
  chunksPerThread?: number;
  /** RuntimeOptions.gemvOutputsPerThread (batch 1). */
  outputsPerThread?: number;
  /** RuntimeOptions.gemvSmallWorkgroupBelow (Infinity: always 128-thread workgroups). */
  smallWorkgroupBelow?: number;
}

const EPS = 1e-6;
const DVH = 16, NB = 3;

/** A case's matrix and everything shared by its entries. */
interface Setup {
  c: Case;
  packed: PackedMatrix;
  xs: number;
  ys: number;
  nh: number;
  outs: number;
  scale: Float32Array;
  variant: GemvVariant;
}

function setup(c: Case, seed: number): Setup {
  const r = rng(seed);
  const w = { rows: c.rows, cols: c.cols, data: randArray(r, c.rows * c.cols, -0.5, 0.5) };
  const packed = packMatrix(w, c.format);
  const outs = c.variant === "pair" ? c.rows / 2 : c.rows;
  const nh = Math.ceil(c.cols / DVH);
  const variant: GemvVariant = c.variant === "rms" || c.variant === "pair"
    ? { pro: 1, pair: c.variant === "pair" }
    : c.variant === "add"
    ? { add: true }
    : c.variant === "heads"
    ? { pro: 2, add: true, nh, dvh: DVH, nb: NB }
    : {};
  return {
    c,
    packed,
    xs: roundUp(c.cols, 16),
    ys: roundUp(outs, 4) + 4,
    nh,
    outs,
    scale: randArray(r, c.cols, 0.5, 1.5),
    variant,
  };
}

/** One batch entry's inputs: its activations, its per-head sums of squares, its residual row. */
interface Entry {
  x: Float32Array;
  ss: Float32Array;
  y0: Float32Array;
}

function entry(s: Setup, seed: number): Entry {
  const r = rng(seed);
  return {
    x: randArray(r, s.c.cols, -2, 2),
    ss: randArray(r, s.nh * NB, 0.5, 40),
    y0: randArray(r, s.ys, -1, 1),
  };
}

/**
 * Run the GEMV over `entries` at the batch tile the runtime picks (or `forceTile`, with gemv.wgsl
 * when `forceOld`) and return the output rows (stride `ys`) plus one row past the batch.
 */
async function runGpu(
  h: Harness,
  s: Setup,
  entries: Entry[],
  o: { forceTile?: number; forceOld?: boolean; outputsPerThread?: number; smallWorkgroupBelow?: number } = {},
): Promise<{ got: Float32Array; file: string }> {
  const B = entries.length;
  const mb = roundUp(B, 32);
  const x = new Float32Array(mb * s.xs);
  const ss = new Float32Array(mb * s.nh * NB);
  const y0 = new Float32Array(mb * s.ys).fill(7);
  entries.forEach((e, b) => {
    x.set(e.x, b * s.xs);
    ss.set(e.ss, b * s.nh * NB);
    y0.set(e.y0, b * s.ys);
  });
  const plan = gemvPlan(
    { ...s.packed },
    s.xs,
    s.ys,
    EPS,
    s.variant,
    s.c.chunksPerThread,
    undefined,
    undefined,
    o.outputsPerThread ?? s.c.outputsPerThread,
    o.smallWorkgroupBelow ?? s.c.smallWorkgroupBelow,
  );
  const auxData = s.c.variant === "heads"
    ? ss
    : new Float32Array(s.xs).map((_, i) => i < s.c.cols ? s.scale[i] : 0);
  const yBuf = h.buffer(y0);
  const bt = o.forceTile ?? Math.min(2 ** Math.ceil(Math.log2(B)), 32);
  const spec = o.forceOld
    ? { file: "gemv.wgsl", defines: gemvDefines(plan.defines, bt) }
    : gemvKernelSpec(plan.defines, bt);
  const grid = o.forceOld ? gemvGrid(plan.outs, plan.rpg, B, bt) : gemvLaunchGrid(plan, B, bt);
  h.run(spec.file, spec.defines, "rrrrwr", [
    h.stepTable(Array.from({ length: B }, (_, i) => i), mb),
    h.buffer(s.packed.data),
    s.packed.scales ? h.buffer(s.packed.scales) : h.buffer(16),
    h.buffer(x),
    yBuf,
    h.buffer(auxData),
  ], grid);
  const got = await h.f32(yBuf, mb * s.ys);
  // Padding columns and entries past the batch are untouched.
  for (let b = 0; b < Math.min(mb, B + 1); b++) {
    for (let j = b < B ? s.outs : 0; j < s.ys; j++) {
      assert(
        got[b * s.ys + j] === y0[b * s.ys + j],
        `wrote entry ${b} column ${j} (outputs ${s.outs}, batch ${B})`,
      );
    }
  }
  return { got: got.slice(0, B * s.ys), file: spec.file };
}

/** Largest relative difference of the GPU rows from the CPU reference, over all entries. */
function checkCpu(s: Setup, entries: Entry[], got: Float32Array): number {
  const ref = unpackMatrix(s.packed);
  const c = s.c;
  let worst = 0;
  entries.forEach((e, b) => {
    const xb = e.x.slice();
    if (c.variant === "rms" || c.variant === "pair") rmsNormRows(xb, s.scale, EPS);
    if (c.variant === "heads") {
      for (let i = 0; i < c.cols; i++) {
        const hd = Math.floor(i / DVH);
        let t = 0;
        for (let k = 0; k < NB; k++) t += e.ss[hd * NB + k];
        xb[i] *= 1 / Math.sqrt(t / DVH + EPS);
      }
    }
    const yv = matvec(ref, xb);
    const want = new Float32Array(s.outs);
    for (let o = 0; o < s.outs; o++) {
      if (c.variant === "pair") want[o] = silu(yv[2 * o]) * yv[2 * o + 1];
      else if (c.variant === "add" || c.variant === "heads") want[o] = e.y0[o] + yv[o];
      else want[o] = yv[o];
    }
    worst = Math.max(worst, maxRelDiff(got.subarray(b * s.ys, b * s.ys + s.outs), want));
  });
  return worst;
}

const VARIANTS: VariantName[] = ["plain", "rms", "pair", "add", "heads"];

/** `rows` × `cols`, adjusted to what the variant needs (row pairs; whole heads of 16). */
function shaped(rows: number, cols: number, format: WeightFormat, variant: VariantName, cpt?: number): Case {
  return {
    rows: variant === "pair" ? rows * 2 : rows,
    cols: variant === "heads" ? roundUp(cols, 16) : cols,
    format,
    variant,
    chunksPerThread: cpt,
  };
}

/** Run a case on `batch` random entries, check the kernel the runtime picks and compare with the CPU. */
async function expectCpu(h: Harness, c: Case, batch: number, seed: number, file: string): Promise<void> {
  const s = setup(c, seed);
  const entries = Array.from({ length: batch }, (_, b) => entry(s, seed * 1000 + b));
  const run = await runGpu(h, s, entries);
  assertEquals(run.file, file, `batch ${batch}`);
  const err = checkCpu(s, entries, run.got);
  // f32 sums: the error grows with the width (2,100 columns reach 5e-5 on SwiGLU's products).
  const tol = c.cols > 1100 ? 1e-4 : 2e-5;
  assert(err < tol, `${JSON.stringify(c)} batch ${batch}: max relative difference ${err}`);
}

Deno.test({
  name: "gemv.wgsl (batch tiles 1-4) equals the CPU matvec for f16/int8 weights, all prologues and epilogues",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    const shapes: [number, number][] = [[37, 70], [96, 200], [50, 1030]];
    try {
      let k = 0;
      for (const format of ["f16", "int8"] as const) {
        for (const variant of VARIANTS) {
          const [rows, cols] = shapes[k % shapes.length];
          const batch = [1, 3, 2, 4, 1, 2, 3, 4, 1, 2][k];
          await expectCpu(h, shaped(rows, cols, format, variant), batch, 100 + k, "gemv.wgsl");
          k++;
        }
      }
      // Fewer, longer-lived threads per row (RuntimeOptions.gemvChunksPerThread) on the wide shape.
      await expectCpu(h, shaped(50, 1030, "f16", "rms", 16), 1, 120, "gemv.wgsl");
      await expectCpu(h, shaped(37, 1030, "int8", "pair", 32), 3, 121, "gemv.wgsl");
      // An LM-head-tall matrix: at most 16 threads per row, two or four outputs per thread at batch 1.
      await expectCpu(h, shaped(GEMV_TALL_OUTPUTS + 5, 40, "f16", "rms"), 1, 125, "gemv.wgsl");
      await expectCpu(h, shaped(GEMV_TALL_OUTPUTS + 5, 40, "int8", "plain"), 3, 126, "gemv.wgsl");
      // 128-thread workgroups (RuntimeOptions.gemvSmallWorkgroupBelow), with one, two and four
      // outputs per thread, for every variant: rows that leave the last workgroup partly empty.
      k = 0;
      for (const r of [1, 2, 4]) {
        for (const format of ["f16", "int8"] as const) {
          for (const variant of VARIANTS) {
            const [rows, cols] = shapes[k % shapes.length];
            const c = {
              ...shaped(rows + 5, cols, format, variant),
              outputsPerThread: r,
              smallWorkgroupBelow: Infinity,
            };
            await expectCpu(h, c, r === 1 ? 1 + (k % 4) : 1, 160 + k, "gemv.wgsl");
            k++;
          }
        }
      }
      // Several outputs per thread at batch 1 (RuntimeOptions.gemvOutputsPerThread), rows that
      // leave the last thread's outputs partly past the end.
      k = 0;
      for (const r of [2, 4]) {
        for (const format of ["f16", "int8"] as const) {
          for (const variant of VARIANTS) {
            const [rows, cols] = shapes[k % shapes.length];
            await expectCpu(
              h,
              { ...shaped(rows + 3, cols, format, variant), outputsPerThread: r },
              1,
              130 + k,
              "gemv.wgsl",
            );
            k++;
          }
        }
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name: "gemv_batched.wgsl (batch tiles 8/16/32) equals the CPU matvec for every variant on ragged shapes",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    // Column lanes 4 (a workgroup of 64 row groups), 16, 32 and 64, chunk counts that do not
    // divide among the lanes, rows that leave the last workgroup partly empty.
    const shapes: [number, number][] = [[37, 70], [300, 520], [50, 1030], [40, 2100]];
    try {
      let k = 0;
      for (const format of ["f16", "int8"] as const) {
        for (const variant of VARIANTS) {
          for (const batch of [8, 13, 27]) {
            const [rows, cols] = shapes[k % shapes.length];
            await expectCpu(h, shaped(rows, cols, format, variant), batch, 200 + k, "gemv_batched.wgsl");
            k++;
          }
        }
      }
      await expectCpu(h, shaped(50, 1030, "f16", "pair", 16), 32, 240, "gemv_batched.wgsl");
      await expectCpu(
        h,
        shaped(70, 1030, "int8", "rms", 32),
        GEMV_BLOCKED_MIN_TILE + 1,
        241,
        "gemv_batched.wgsl",
      );
    } finally {
      h.dispose();
    }
  },
});

/** The bits of entry `b`'s output row. */
function rowBits(s: Setup, got: Float32Array, b: number): number[] {
  return [...new Uint32Array(got.slice(b * s.ys, b * s.ys + s.outs).buffer)];
}

Deno.test({
  name:
    "an entry's GEMV output is bit-identical at every batch tile (1-32, both kernels), beside any entries",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      let k = 0;
      for (const format of ["f16", "int8"] as const) {
        for (const variant of VARIANTS) {
          const s = setup(shaped(k % 2 ? 70 : 45, k % 2 ? 1030 : 520, format, variant), 300 + k);
          const probe = entry(s, 7);
          // [batch, probe's place, tile forced onto gemv.wgsl or undefined for the runtime's choice]
          const runs: [number, number, number?][] = [
            [1, 0],
            [3, 2],
            [8, 0, 8],
            [8, 5],
            [13, 9],
            [16, 12],
            [32, 31],
            [27, 0],
          ];
          let want: number[] | null = null;
          for (const [i, [batch, at, oldTile]] of runs.entries()) {
            const entries = Array.from(
              { length: batch },
              (_, b) => b === at ? probe : entry(s, 1000 * i + b),
            );
            const { got } = await runGpu(
              h,
              s,
              entries,
              oldTile ? { forceTile: oldTile, forceOld: true } : {},
            );
            const bits = rowBits(s, got, at);
            if (want === null) {
              want = bits;
              assert(checkCpu(s, [probe], got.slice(0, s.ys)) < 2e-5, "batch 1 differs from the CPU");
              // Batch 1 with several outputs per thread, on 256- or 128-thread workgroups: the same bits.
              for (const r of [1, 2, 4]) {
                for (const small of [0, Infinity]) {
                  const other = await runGpu(h, s, [probe], {
                    outputsPerThread: r,
                    smallWorkgroupBelow: small,
                  });
                  assertEquals(
                    rowBits(s, other.got, 0),
                    want,
                    `${format} ${variant}: ${r} outputs per thread, ${small ? 128 : 256}-thread workgroups`,
                  );
                }
              }
              // Batch 3 on 128-thread workgroups: the same bits.
              const three = await runGpu(h, s, [entry(s, 41), probe, entry(s, 42)], {
                smallWorkgroupBelow: Infinity,
              });
              assertEquals(
                rowBits(s, three.got, 1),
                want,
                `${format} ${variant}: batch 3, 128-thread workgroups`,
              );
            } else {
              assertEquals(
                bits,
                want,
                `${format} ${variant}: batch ${batch}, place ${at} differs from batch 1`,
              );
            }
          }
          k++;
        }
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test("GEMV rows get at most the capped threads, unless that leaves too few workgroups", () => {
  // 4,096-wide rows (512 chunks): 32 threads under the cap when 4,096 outputs fill 512 workgroups.
  assertEquals(gemvRowThreads(512, 4096, 4, 32), 32);
  // The same rows with 1,024 outputs would get 128 workgroups of 8 rows: the cap is lifted to 64.
  assertEquals(gemvRowThreads(448, 1024, 4, 32), 64);
  assertEquals(Math.ceil(1024 / (256 / 64)), GEMV_MIN_WORKGROUPS);
  // Short rows never reach the cap; a cap of 64 changes nothing.
  assertEquals(gemvRowThreads(128, 1024, 4, 32), 32);
  assertEquals(gemvRowThreads(512, 4096, 4, 64), 64);
  // LM-head-tall GEMVs take at most GEMV_TALL_TPR, under any cap.
  assertEquals(gemvRowThreads(128, GEMV_TALL_OUTPUTS, 4, 64), GEMV_TALL_TPR);
  assertEquals(gemvRowThreads(16, GEMV_TALL_OUTPUTS, 4, 32), 4);
  // gemvPlan follows it, so both GEMV kernels share the choice (they must stay bit-identical).
  const plan = (rows: number, cols: number) =>
    gemvPlan({ rows, cols, chunks: cols / 8, format: "f16" }, cols, rows, 1e-6, {}, 4, 32);
  assertEquals(plan(4096, 4096).defines.TPR, 32);
  assertEquals(plan(1024, 3584).defines.TPR, 64);
});

Deno.test("small-tile GEMVs halve their workgroups below the option's workgroup count, keeping the lanes", () => {
  const plan = (rows: number, cols: number, format: WeightFormat, below: number) =>
    gemvPlan(
      { rows, cols, chunks: cols / (format === "int8" ? 16 : 8), format },
      cols,
      rows,
      1e-6,
      {},
      4,
      32,
      1,
      0,
      below,
    );
  // Qwen3.5-0.8B's int8 down projection: 32 threads per row, 8 rows per 256 threads = 128 workgroups.
  const wide = plan(1024, 3584, "int8", 0);
  assertEquals([wide.defines.WG1, wide.rpg, wide.defines.TPR], [256, 8, 32]);
  const small = plan(1024, 3584, "int8", 256);
  assertEquals([small.defines.WG1, small.rpg, small.defines.TPR], [128, 4, 32]);
  // The batched kernel keeps its 256 threads and lanes; gemv.wgsl's defines carry the 128.
  assertEquals([gemvKernelSpec(small.defines, 8).defines.WG, gemvKernelSpec(small.defines, 1).defines.WG], [
    256,
    128,
  ]);
  assertEquals(gemvLaunchGrid(small, 1, 1), [1, 256, 1]);
  // At or above the count nothing changes: 8,224 rows of int8 fill 514 workgroups.
  assertEquals(plan(8224, 1024, "int8", 514).defines.WG1, 256);
  assertEquals(plan(8224, 1024, "int8", 515).defines.WG1, 128);
});

Deno.test("a tall GEMV's threads keep 16 chunks in flight at batch 1; short ones load one chunk ahead", () => {
  const tall = (cols: number, format: WeightFormat) => {
    const chunks = cols / (format === "int8" ? 16 : 8);
    const d = gemvPlan({ rows: 248320, cols, chunks, format }, cols, 248320, 1e-6, { pro: 1 }).defines;
    return { PF: d.PF, R1: d.R1, inFlight: Number(d.PF) * Number(d.R1) };
  };
  // Qwen3.5-0.8B's LM head (1,024 wide): f16 rows load 8 chunks per thread, int8 rows only 4.
  assertEquals(tall(1024, "f16"), { PF: 8, R1: 2, inFlight: GEMV_TALL_CHUNKS_IN_FLIGHT });
  assertEquals(tall(1024, "int8"), { PF: 4, R1: 4, inFlight: GEMV_TALL_CHUNKS_IN_FLIGHT });
  // Wider heads (9B: 4,096) load 8 chunks either way and keep two outputs.
  assertEquals(tall(4096, "int8"), { PF: 8, R1: 2, inFlight: GEMV_TALL_CHUNKS_IN_FLIGHT });
  // An explicit RuntimeOptions.gemvOutputsPerThread still wins.
  const forced = gemvPlan(
    { rows: 248320, cols: 1024, chunks: 64, format: "int8" },
    1024,
    248320,
    1e-6,
    {},
    4,
    32,
    4,
    1,
  );
  assertEquals(forced.defines.R1, 1);
  // Short GEMVs load one chunk before their first multiply unless told otherwise.
  const short = (format: WeightFormat, prefetch?: number) =>
    gemvPlan(
      { rows: 8224, cols: 1024, chunks: format === "int8" ? 64 : 128, format },
      1024,
      8224,
      1e-6,
      {},
      4,
      32,
      prefetch,
    )
      .defines.PF;
  assertEquals([short("f16"), short("int8"), short("f16", 4), short("int8", 3)], [1, 1, 4, 3]);
  // Short GEMVs are unchanged: two outputs from 4,096 rows, else one.
  assertEquals(
    gemvPlan({ rows: 8224, cols: 1024, chunks: 64, format: "int8" }, 1024, 8224, 1e-6, {}).defines.R1,
    2,
  );
  assertEquals(
    gemvPlan({ rows: 1024, cols: 2048, chunks: 128, format: "int8" }, 2048, 1024, 1e-6, {}).defines.R1,
    1,
  );
});
