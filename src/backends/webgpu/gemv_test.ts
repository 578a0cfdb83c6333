/**
 * gemv.wgsl against its CPU twin (`matvec` on the dequantised matrix, with `rmsNormRows`,
 * `gatedRmsNorm`'s 1/rms factor, SwiGLU and the residual add done on the CPU), on random inputs
 * with ragged sizes, f16 and int8 weights, and batch tiles from 1 to 32.
 */
import { assert } from "@std/assert";
import { matvec, rmsNormRows, silu } from "../cpu/ops.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";
import { packMatrix, roundUp, unpackMatrix, type WeightFormat } from "./pack.ts";
import { gemvDefines, gemvGrid, gemvPlan, type GemvVariant } from "./runtime.ts";

const gpu = await testGpu();

interface Case {
  rows: number;
  cols: number;
  batch: number;
  format: WeightFormat;
  variant: "plain" | "rms" | "pair" | "add" | "heads";
  chunksPerThread?: number;
}

async function runCase(h: Harness, c: Case, seed: number): Promise<number> {
  const r = rng(seed);
  const eps = 1e-6;
  const w = { rows: c.rows, cols: c.cols, data: randArray(r, c.rows * c.cols, -0.5, 0.5) };
  const packed = packMatrix(w, c.format);
  const ref = unpackMatrix(packed);
  const xs = roundUp(c.cols, 16);
  const B = c.batch;
  const mb = roundUp(B, 32);
  const x = new Float32Array(mb * xs);
  for (let b = 0; b < B; b++) x.set(randArray(r, c.cols, -2, 2), b * xs);
  const scale = randArray(r, c.cols, 0.5, 1.5);
  const dvh = 16, nh = Math.ceil(c.cols / dvh), nb = 3;
  const ss = randArray(r, mb * nh * nb, 0.5, 40);
  const outs = c.variant === "pair" ? c.rows / 2 : c.rows;
  const ys = roundUp(outs, 4) + 4;
  const y0 = randArray(r, mb * ys, -1, 1);

  const variant: GemvVariant = c.variant === "rms" || c.variant === "pair"
    ? { pro: 1, pair: c.variant === "pair" }
    : c.variant === "add"
    ? { add: true }
    : c.variant === "heads"
    ? { pro: 2, add: true, nh, dvh, nb }
    : {};
  const plan = gemvPlan({ ...packed }, xs, ys, eps, variant, c.chunksPerThread);
  const auxData = c.variant === "heads"
    ? ss
    : new Float32Array(xs).fill(0).map((_, i) => i < c.cols ? scale[i] : 0);
  const yBuf = h.buffer(y0);
  const bt = Math.min(2 ** Math.ceil(Math.log2(B)), 32);
  h.run("gemv.wgsl", gemvDefines(plan.defines, bt), "rrrrwr", [
    h.stepTable(Array.from({ length: B }, (_, i) => i), mb),
    h.buffer(packed.data),
    packed.scales ? h.buffer(packed.scales) : h.buffer(16),
    h.buffer(x),
    yBuf,
    h.buffer(auxData),
  ], gemvGrid(plan.outs, plan.rpg, B, bt));
  const got = await h.f32(yBuf, mb * ys);

  let worst = 0;
  for (let b = 0; b < B; b++) {
    const xb = x.slice(b * xs, b * xs + c.cols);
    if (c.variant === "rms" || c.variant === "pair") rmsNormRows(xb, scale, eps);
    if (c.variant === "heads") {
      for (let i = 0; i < c.cols; i++) {
        const hd = Math.floor(i / dvh);
        let s = 0;
        for (let k = 0; k < nb; k++) s += ss[(b * nh + hd) * nb + k];
        xb[i] *= 1 / Math.sqrt(s / dvh + eps);
      }
    }
    const yv = matvec(ref, xb);
    const want = new Float32Array(outs);
    for (let o = 0; o < outs; o++) {
      if (c.variant === "pair") want[o] = silu(yv[2 * o]) * yv[2 * o + 1];
      else if (c.variant === "add" || c.variant === "heads") want[o] = y0[b * ys + o] + yv[o];
      else want[o] = yv[o];
    }
    worst = Math.max(worst, maxRelDiff(got.subarray(b * ys, b * ys + outs), want));
    // Entries outside the batch and padding columns are untouched.
    for (let o = outs; o < ys; o++) assert(got[b * ys + o] === y0[b * ys + o], "wrote past the outputs");
  }
  for (let b = B; b < Math.min(mb, B + 1); b++) {
    for (let o = 0; o < ys; o++) assert(got[b * ys + o] === y0[b * ys + o], "wrote past the batch");
  }
  return worst;
}

Deno.test({
  name:
    "gemv kernel equals the CPU matvec for f16/int8 weights, all prologues and epilogues, batch tiles 1-32",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    const cases: Case[] = [];
    const shapes: [number, number][] = [[37, 70], [96, 200], [50, 1030]];
    let k = 0;
    for (const format of ["f16", "int8"] as const) {
      for (const variant of ["plain", "rms", "pair", "add", "heads"] as const) {
        const [rows, cols] = shapes[k % shapes.length];
        // Tiles 1, 2, 4, 8 everywhere; 16 and 32 (slow to compile on lavapipe) once each.
        const batch = [1, 3, 6, 2, 13, 1, 32, 5, 4, 2][k];
        cases.push({
          rows: variant === "pair" ? rows * 2 : rows,
          cols: variant === "heads" ? roundUp(cols, 16) : cols,
          batch,
          format,
          variant,
        });
        k++;
      }
    }
    // Fewer, longer-lived threads per row (RuntimeOptions.gemvChunksPerThread) on the wide shape.
    cases.push({ rows: 50, cols: 1030, batch: 1, format: "f16", variant: "rms", chunksPerThread: 16 });
    cases.push({ rows: 74, cols: 1030, batch: 3, format: "int8", variant: "pair", chunksPerThread: 32 });
    try {
      for (const [i, c] of cases.entries()) {
        const err = await runCase(h, c, 100 + i);
        assert(err < 2e-5, `${JSON.stringify(c)}: max relative difference ${err}`);
      }
    } finally {
      h.dispose();
    }
  },
});
