import { assert, assertLess } from "@std/assert";
import { matmulT, type Matrix, silu } from "../../cpu/ops.ts";
import { encodeGemm, gemmLoopBound, type GemmTileName } from "./gemm.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, relL2, rng, run, testContext } from "./testing.ts";
import { gpuWeight } from "./weights.ts";
import type { PrefillWeightFormat } from "./gemm.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

function randomMatrix(rand: () => number, rows: number, cols: number): Matrix {
  return { rows, cols, data: randomArray(rand, rows * cols) };
}

Deno.test(
  "GEMM equals matmulT for f32, f16 and int8 weights at prompt lengths 1, 63, 64, 65, 200",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(1);
    const K = 100, N = 75; // K not a multiple of 8 or 16: exercises the padded last chunk
    const w = randomMatrix(rand, N, K);
    for (const format of ["f32", "f16", "int8"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, w, format);
      for (const M of [1, 63, 64, 65, 200]) {
        for (const tile of ["small", "large"] as GemmTileName[]) {
          const x = randomArray(rand, M * K);
          const y = zeros(ctx.device, M * N);
          await run(ctx, (pass) =>
            encodeGemm(ctx, pass, {
              M,
              N,
              K,
              x: upload(ctx.device, x),
              xStride: K,
              w: gpu,
              y,
              yStride: N,
              tile,
            }));
          const got = await readF32(ctx.device, y, M * N);
          const want = matmulT(seen, x, M);
          const err = relL2(got, want);
          assertLess(err, 1e-5, `${format} M=${M} ${tile}: rel_l2 ${err}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test("GEMM accumulates into a strided output slice and fuses SwiGLU pairs", opts, async () => {
  const ctx = await testContext();
  const rand = rng(2);
  const M = 70, K = 64, I = 40, YS = 50, YOFF = 7;
  const gate = randomMatrix(rand, I, K), up = randomMatrix(rand, I, K);
  const inter = new Float32Array(2 * I * K);
  for (let r = 0; r < I; r++) {
    inter.set(gate.data.subarray(r * K, (r + 1) * K), 2 * r * K);
    inter.set(up.data.subarray(r * K, (r + 1) * K), (2 * r + 1) * K);
  }
  const { gpu, seen } = gpuWeight(ctx.device, { rows: 2 * I, cols: K, data: inter }, "f32");
  const x = randomArray(rand, M * K);
  const base = randomArray(rand, M * YS);
  const y = upload(ctx.device, base);
  await run(
    ctx,
    (pass) =>
      encodeGemm(ctx, pass, {
        M,
        N: 2 * I,
        K,
        x: upload(ctx.device, x),
        xStride: K,
        w: gpu,
        y,
        yOffset: YOFF,
        yStride: YS,
        accumulate: true,
        swiglu: true,
      }),
  );
  const got = await readF32(ctx.device, y, M * YS);
  const full = matmulT(seen, x, M);
  const want = base.slice();
  for (let m = 0; m < M; m++) {
    for (let i = 0; i < I; i++) {
      want[m * YS + YOFF + i] += silu(full[m * 2 * I + 2 * i]) * full[m * 2 * I + 2 * i + 1];
    }
  }
  assertLess(relL2(got, want), 1e-5);
  await checkLoops(ctx);
});

Deno.test(
  "batched transposed GEMM computes X·W per head from [K, N] row slices (f32 and f16)",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(3);
    // MLA-like: per head h, qc[t, h, :] = q_nope[t, h, :] · Wk(h) with Wk(h) rows h·(dn+dv) .. +dn of [·, r].
    const heads = 3, dn = 12, dv = 8, r = 20, M = 65, PS = heads * (dn + 4) + 4;
    const kvB = randomMatrix(rand, heads * (dn + dv), r);
    for (const format of ["f32", "f16"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, kvB, format);
      const x = randomArray(rand, M * PS);
      const y = zeros(ctx.device, M * heads * r);
      await run(ctx, (pass) =>
        encodeGemm(ctx, pass, {
          M,
          N: r,
          K: dn,
          x: upload(ctx.device, x),
          xOffset: 4,
          xStride: PS,
          w: gpu,
          transposed: true,
          y,
          yStride: heads * r,
          batch: { count: heads, xStep: dn + 4, wRowStep: dn + dv, yStep: r },
        }));
      const got = await readF32(ctx.device, y, M * heads * r);
      const want = new Float32Array(M * heads * r);
      for (let t = 0; t < M; t++) {
        for (let h = 0; h < heads; h++) {
          for (let j = 0; j < r; j++) {
            let acc = 0;
            for (let i = 0; i < dn; i++) {
              acc += x[t * PS + 4 + h * (dn + 4) + i] *
                seen.data[(h * (dn + dv) + i) * r + j];
            }
            want[(t * heads + h) * r + j] = acc;
          }
        }
      }
      assertLess(relL2(got, want), 1e-5, format);
    }
    await checkLoops(ctx);
  },
);

Deno.test("GEMM loop bound stays under Mesa's cap for the largest real inner dimensions", () => {
  // Qwen3.5-27B down projection (17408), Kimi-Linear dense MLP (9216), 397B hidden (4096).
  for (const K of [1024, 4096, 12288, 17408, 65536]) assert(gemmLoopBound(K) < 65_535, `K=${K}`);
});

Deno.test("GEMM at a hidden size of 1024 with the large tile and f16 weights", opts, async () => {
  const ctx = await testContext();
  const rand = rng(4);
  const M = 130, K = 1024, N = 260;
  const { gpu, seen } = gpuWeight(ctx.device, randomMatrix(rand, N, K), "f16");
  const x = randomArray(rand, M * K);
  const y = zeros(ctx.device, M * N);
  await run(
    ctx,
    (pass) =>
      encodeGemm(ctx, pass, {
        M,
        N,
        K,
        x: upload(ctx.device, x),
        xStride: K,
        w: gpu,
        y,
        yStride: N,
        tile: "large",
      }),
  );
  assertLess(relL2(await readF32(ctx.device, y, M * N), matmulT(seen, x, M)), 1e-5);
  await checkLoops(ctx);
});
