/**
 * The prefill GEMM (`kernels/prefill_gemm.wgsl`) against the CPU twin `matmulT`, for every named
 * variant (tile shape, buffering, invocation mapping): ragged M, N and K, f32/f16/int8 weights,
 * the plain, accumulating and SwiGLU epilogues, strided/offset inputs and outputs, and the
 * batched transposed product. One context (so one pipeline cache) serves the whole file.
 *
 * Pipeline compiles dominate on lavapipe (~2 s each without Mesa's disk cache), so by default
 * every variant runs f16 weights with the storing/accumulating epilogue; int8 weights with SwiGLU
 * (scales included) run on `large`, `db128k8` (K step of 8: int8 loaded as half chunks) and
 * `db128x64`; transposed f16 on `large` and `db128k8`; f32 (plain and transposed) on `large`.
 * `CAPSULE_GEMM_TEST_ALL=1` runs the full cross product (every variant × f32/f16/int8 × every
 * epilogue, transposed f32 and f16).
 * @module
 */
import { assert, assertEquals, assertLess, assertThrows } from "@std/assert";
import { matmulT, type Matrix, silu } from "../../cpu/ops.ts";
import { CapsuleError } from "../../../errors.ts";
import {
  encodeGemm,
  GEMM_SMALL_M_BELOW,
  GEMM_TILE_NAMES,
  GEMM_TILES,
  gemmLoopBound,
  gemmTileFor,
  type GemmTileName,
  gemmWorkgroupBytes,
  isGemmTileName,
  type PrefillWeightFormat,
} from "./gemm.ts";
import type { PrefillContext } from "./context.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, relL2, rng, run, testContext } from "./testing.ts";
import { gpuWeight } from "./weights.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

let shared: Promise<PrefillContext> | null = null;
/** One loop-counting context for the file: pipelines compile once (slow on lavapipe). */
function context(): Promise<PrefillContext> {
  shared ??= testContext();
  return shared;
}

function randomMatrix(rand: () => number, rows: number, cols: number): Matrix {
  return { rows, cols, data: randomArray(rand, rows * cols) };
}

/** Full cross product of variants × formats × epilogues (slow on lavapipe). */
const ALL = Deno.env.get("CAPSULE_GEMM_TEST_ALL") === "1";

/** The variants a (format, epilogue) pair runs on by default. */
function variantsFor(covered: boolean, few: GemmTileName[] = ["large"]): readonly GemmTileName[] {
  return ALL || covered ? GEMM_TILE_NAMES : few;
}

/** Prompt lengths around the 32/64/128-row tile edges. */
const MS = [1, 63, 65, 200];

Deno.test(
  "every GEMM variant equals matmulT on ragged shapes, storing and accumulating into a strided slice (f16; f32 and int8 too)",
  opts,
  async () => {
    const ctx = await context();
    const rand = rng(1);
    // K not a multiple of 8 or 16 (padded last chunk, partial K step); N not a multiple of 4.
    const K = 100, N = 75, XS = K + 8, XOFF = 4, YS = N + 6, YOFF = 3;
    const w = randomMatrix(rand, N, K);
    for (const format of ["f32", "f16", "int8"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, w, format);
      for (const tile of variantsFor(format === "f16", format === "f32" ? ["large"] : [])) {
        const cases = MS.map((M) => {
          const x = randomArray(rand, XOFF + M * XS);
          const base = randomArray(rand, M * YS);
          return { M, x, base, accumulate: M % 2 === 1, y: upload(ctx.device, base) };
        });
        await run(ctx, (pass) => {
          for (const c of cases) {
            encodeGemm(ctx, pass, {
              M: c.M,
              N,
              K,
              x: upload(ctx.device, c.x),
              xOffset: XOFF,
              xStride: XS,
              w: gpu,
              y: c.y,
              yOffset: YOFF,
              yStride: YS,
              accumulate: c.accumulate,
              tile,
            });
          }
        });
        for (const c of cases) {
          const dense = new Float32Array(c.M * K);
          for (let m = 0; m < c.M; m++) dense.set(c.x.subarray(XOFF + m * XS, XOFF + m * XS + K), m * K);
          const full = matmulT(seen, dense, c.M);
          const want = c.base.slice();
          for (let m = 0; m < c.M; m++) {
            for (let n = 0; n < N; n++) {
              const i = m * YS + YOFF + n;
              want[i] = (c.accumulate ? want[i] : 0) + full[m * N + n];
            }
          }
          const got = await readF32(ctx.device, c.y, c.M * YS);
          const err = relL2(got, want);
          assertLess(err, 1e-5, `${tile} ${format} M=${c.M}: rel_l2 ${err}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "every GEMM variant fuses SwiGLU pairs with int8 weights and their scales (f16 too)",
  opts,
  async () => {
    const ctx = await context();
    const rand = rng(2);
    // 37 outputs: 74 interleaved rows, a partial 4-column group at the end; K = 72 ends mid-step.
    const K = 72, I = 37, YS = 45, YOFF = 5;
    const gate = randomMatrix(rand, I, K), up = randomMatrix(rand, I, K);
    const inter = new Float32Array(2 * I * K);
    for (let r = 0; r < I; r++) {
      inter.set(gate.data.subarray(r * K, (r + 1) * K), 2 * r * K);
      inter.set(up.data.subarray(r * K, (r + 1) * K), (2 * r + 1) * K);
    }
    for (const format of ["f16", "int8"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, { rows: 2 * I, cols: K, data: inter }, format);
      for (const tile of variantsFor(false, format === "int8" ? ["large", "db128k8", "db128x64"] : [])) {
        const cases = [1, 65, 200].map((M) => {
          const base = randomArray(rand, M * YS);
          return { M, x: randomArray(rand, M * K), base, accumulate: M !== 65, y: upload(ctx.device, base) };
        });
        await run(ctx, (pass) => {
          for (const c of cases) {
            encodeGemm(ctx, pass, {
              M: c.M,
              N: 2 * I,
              K,
              x: upload(ctx.device, c.x),
              xStride: K,
              w: gpu,
              y: c.y,
              yOffset: YOFF,
              yStride: YS,
              accumulate: c.accumulate,
              swiglu: true,
              tile,
            });
          }
        });
        for (const c of cases) {
          const full = matmulT(seen, c.x, c.M);
          const want = c.base.slice();
          for (let m = 0; m < c.M; m++) {
            for (let i = 0; i < I; i++) {
              const j = m * YS + YOFF + i;
              want[j] = (c.accumulate ? want[j] : 0) +
                silu(full[m * 2 * I + 2 * i]) * full[m * 2 * I + 2 * i + 1];
            }
          }
          const err = relL2(await readF32(ctx.device, c.y, c.M * YS), want);
          assertLess(err, 1e-5, `${tile} ${format} M=${c.M}: rel_l2 ${err}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "GEMM variants compute the batched transposed product X·W per head from [K, N] row slices (f16 and f32)",
  opts,
  async () => {
    const ctx = await context();
    const rand = rng(3);
    // MLA-like: per head h, qc[t, h, :] = q_nope[t, h, :] · Wk(h) with Wk(h) rows h·(dn+dv) .. +dn of [·, r].
    const heads = 3, dn = 20, dv = 8, r = 21, M = 65, PS = heads * (dn + 4) + 4;
    const kvB = randomMatrix(rand, heads * (dn + dv), r);
    for (const format of ["f32", "f16"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, kvB, format);
      const x = randomArray(rand, M * PS);
      const want = new Float32Array(M * heads * r);
      for (let t = 0; t < M; t++) {
        for (let h = 0; h < heads; h++) {
          for (let j = 0; j < r; j++) {
            let acc = 0;
            for (let i = 0; i < dn; i++) {
              acc += x[t * PS + 4 + h * (dn + 4) + i] * seen.data[(h * (dn + dv) + i) * r + j];
            }
            want[(t * heads + h) * r + j] = acc;
          }
        }
      }
      for (const tile of variantsFor(false, format === "f16" ? ["large", "db128k8"] : ["large"])) {
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
            tile,
          }));
        const err = relL2(await readF32(ctx.device, y, M * heads * r), want);
        assertLess(err, 1e-5, `${tile} ${format}: rel_l2 ${err}`);
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "every GEMM variant at a hidden size of 1024 with f16 weights over several K steps",
  opts,
  async () => {
    const ctx = await context();
    const rand = rng(4);
    const M = 130, K = 1024, N = 140;
    const { gpu, seen } = gpuWeight(ctx.device, randomMatrix(rand, N, K), "f16");
    const x = randomArray(rand, M * K);
    const want = matmulT(seen, x, M);
    for (const tile of GEMM_TILE_NAMES) {
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
      const err = relL2(await readF32(ctx.device, y, M * N), want);
      assertLess(err, 1e-5, `${tile}: rel_l2 ${err}`);
    }
    await checkLoops(ctx);
  },
);

Deno.test("GEMM loop bound stays under Mesa's cap for the largest real inner dimensions, every variant", () => {
  // Qwen3.5-27B down projection (17408), Kimi-Linear dense MLP (9216), 397B hidden (4096).
  for (const tile of GEMM_TILE_NAMES) {
    for (const K of [1024, 4096, 12288, 17408, 65536]) {
      assertLess(gemmLoopBound(K, tile), 65_535, `${tile} K=${K}`);
    }
  }
});

Deno.test("GEMM variants are well-formed and fit 32 KiB of workgroup memory", () => {
  for (const name of GEMM_TILE_NAMES) {
    const t = GEMM_TILES[name];
    const tx = t.BN / t.TN, ty = t.BM / t.TM;
    assert(Number.isInteger(tx) && Number.isInteger(ty), name);
    assert(t.TM % 4 === 0 && t.TN % 4 === 0 && t.BK % 8 === 0, name);
    assert(tx * ty <= 256, `${name}: ${tx * ty} invocations`);
    if (t.warpX > 0) {
      assert((tx * ty) % 32 === 0 && tx % t.warpX === 0 && ty % (32 / t.warpX) === 0, name);
    }
    assert(gemmWorkgroupBytes(name) <= 32768, `${name}: ${gemmWorkgroupBytes(name)} B`);
  }
  assert(isGemmTileName("large") && !isGemmTileName("toString") && !isGemmTileName("huge"));
  assertEquals(gemmTileFor(GEMM_SMALL_M_BELOW - 1), "small");
});

Deno.test("GEMM refuses a variant that needs more workgroup memory than the device has", opts, async () => {
  const gpu = await testContext({ countLoops: false });
  const ctx = Object.create(gpu, { maxWorkgroupStorage: { value: 16384 } }) as PrefillContext;
  const { gpu: w } = gpuWeight(ctx.device, randomMatrix(rng(5), 8, 8), "f32");
  const y = zeros(ctx.device, 64);
  assertThrows(
    () =>
      encodeGemm(ctx, {} as GPUComputePassEncoder, {
        M: 8,
        N: 8,
        K: 8,
        x: y,
        xStride: 8,
        w,
        y,
        yStride: 8,
        tile: "db128k16",
      }),
    CapsuleError,
    "workgroup memory",
  );
});
