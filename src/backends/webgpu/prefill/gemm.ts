/**
 * The prefill GEMM (`kernels/prefill_gemm.wgsl`): every projection of a T-token prompt as one
 * tiled matrix product, `Y = X · Wᵀ` with `W` in the `nn.Linear` layout `[out, in]` (the CPU twin
 * is `matmulT`), or `Y = X · W` for `W` stored `[in, out]` (`transposed`, used by MLA's absorbed
 * key projection). Weights are f32, f16 or int8 in the decode backend's packing (rows padded to
 * whole 16-byte chunks); activations and accumulation are f32.
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import type { PrefillContext } from "./context.ts";

/** Storage of a weight matrix. */
export type PrefillWeightFormat = "f32" | "f16" | "int8";

/**
 * A weight matrix on the GPU: `rows × cols` logical values stored row-major with each row padded
 * to `chunks` 16-byte chunks (4 f32, 8 f16 or 16 int8 values per chunk). The decode backend's
 * `GpuMatrix` has exactly these fields.
 */
export interface GemmWeight {
  buf: GPUBuffer;
  format: PrefillWeightFormat;
  rows: number;
  cols: number;
  chunks: number;
  /** int8 only: one f32 scale per row (`w = scale · q / 127`). */
  scales?: GPUBuffer;
}

/** One GEMM: `Y[m, yOffset + n·1] (+)= Σ_k X[m, k] · W(n, k)` over `M` rows. */
export interface GemmArgs {
  /** Rows (tokens). */
  M: number;
  /** Outputs. */
  N: number;
  /** Inner dimension. */
  K: number;
  /** Input `[M, xStride]` f32, read from value `xOffset` (both multiples of 4). */
  x: GPUBuffer;
  xOffset?: number;
  xStride: number;
  w: GemmWeight;
  /** First row of `w` used (row n of the product is row `wRow + n`, or row `wRow + k` when transposed). */
  wRow?: number;
  /** `w` is stored `[K, N]` (product `X · W`); f32 or f16 only. */
  transposed?: boolean;
  /** Output f32 `[M, yStride]` from value `yOffset`. */
  y: GPUBuffer;
  yOffset?: number;
  yStride: number;
  /** Add to `y` instead of overwriting it (residual connections). */
  accumulate?: boolean;
  /**
   * W's rows interleave (gate, up) pairs (`interleaveRows(gate, up)`): write `N/2` outputs
   * `silu(gate) · up` instead of `N` (N must be even).
   */
  swiglu?: boolean;
  /** Independent products over grid z: offsets grow by these per batch index (values / W rows). */
  batch?: { count: number; xStep: number; wRowStep: number; yStep: number };
  /** Tile shape; default by M. */
  tile?: GemmTileName;
}

/**
 * Named GEMM variants (tile shapes and pipelining, see {@link GEMM_TILES}). `large` and `small`
 * are the original kernels; the others are candidates to measure on the target GPU.
 */
export type GemmTileName =
  | "large"
  | "small"
  | "large_w"
  | "db128k8"
  | "db128k8w"
  | "db128k16"
  | "db128x64";

/** One GEMM variant: the compile-time shape of `kernels/prefill_gemm.wgsl`. */
export interface GemmTile {
  /** Output rows (tokens) per workgroup. */
  BM: number;
  /** Output columns per workgroup. */
  BN: number;
  /** K values per step staged in workgroup memory (a multiple of 4; 8 or 16). */
  BK: number;
  /** Rows per invocation (a multiple of 4). */
  TM: number;
  /** Columns per invocation (a multiple of 4). */
  TN: number;
  /** Workgroup buffers: 1 (two barriers per K step) or 2 (double-buffered, one barrier per step). */
  stages: 1 | 2;
  /**
   * Invocations along n inside each 32-invocation group (warp-shaped mapping: a warp covers
   * `TM·32/warpX` × `TN·warpX` outputs), or 0 for the row-major mapping over the whole workgroup.
   */
  warpX: number;
  /** Floats of padding per workgroup-memory row (spreads the transposing stores over banks). */
  pad: number;
}

/**
 * The GEMM variants. Every one converts f16/int8 weights to f32 once, when staged into workgroup
 * memory, reads workgroup memory as vec4, and prefetches the next K step's global loads into
 * registers before the current step's products. Workgroup memory is
 * `stages · BK · (BM + BN + 2·pad) · 4` bytes (32 KiB at most, so all run on lavapipe too).
 *
 * - `large`: 128×128 block, 8×8 per invocation, 256 invocations, BK 16, one buffer (the original
 *   prompt kernel and the default until measured).
 * - `small`: 32×64 block, 4×4, 128 invocations, BK 16 — more workgroups for short inputs.
 * - `large_w`: `large` with warp-shaped 32×64 patches per warp (8 distinct vec4 reads of W and 4
 *   of X per warp and k instead of 16 and 2): isolates the effect of the mapping.
 * - `db128k8`: 128×128, 8×8, 256 invocations, BK 8, double-buffered (16.5 KiB): one barrier per
 *   step and small workgroup memory, so more workgroups per SM can hide the barrier latency.
 * - `db128k8w`: `db128k8` with the warp-shaped mapping (the classic SIMT SGEMM configuration).
 * - `db128k16`: 128×128, 8×8, BK 16, double-buffered, unpadded (32 KiB): half the barriers per
 *   FMA of `db128k8`, fewer workgroups per SM.
 * - `db128x64`: 128×64 block, 8×4 per invocation, 256 invocations, BK 16, double-buffered — twice
 *   the workgroups of a 128×128 grid for narrow outputs (N = hidden size: o, out and down
 *   projections), at a lower FMA-per-load ratio.
 */
export const GEMM_TILES: Record<GemmTileName, GemmTile> = {
  large: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, stages: 1, warpX: 0, pad: 4 },
  small: { BM: 32, BN: 64, BK: 16, TM: 4, TN: 4, stages: 1, warpX: 0, pad: 4 },
  large_w: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, stages: 1, warpX: 8, pad: 4 },
  db128k8: { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, stages: 2, warpX: 0, pad: 4 },
  db128k8w: { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, stages: 2, warpX: 8, pad: 4 },
  db128k16: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, stages: 2, warpX: 0, pad: 0 },
  db128x64: { BM: 128, BN: 64, BK: 16, TM: 8, TN: 4, stages: 2, warpX: 0, pad: 4 },
};

/** Every variant name, in a stable order (tests and the benchmark sweep iterate over it). */
export const GEMM_TILE_NAMES: readonly GemmTileName[] = Object.keys(GEMM_TILES) as GemmTileName[];

/**
 * The variant of every GEMM over {@link GEMM_SMALL_M_BELOW} or more rows (prompts) that names no
 * tile: the one switch to flip after measuring the variants (`bench/prefill.ts --gemm-sweep`).
 */
export const DEFAULT_GEMM_VARIANT: GemmTileName = "large";

/** GEMMs over fewer rows than this use `small` unless a tile is named. */
export const GEMM_SMALL_M_BELOW = 96;

/** Whether `name` is a GEMM variant. */
export function isGemmTileName(name: string): name is GemmTileName {
  return Object.hasOwn(GEMM_TILES, name);
}

function perChunk(f: PrefillWeightFormat): number {
  return f === "f32" ? 4 : f === "f16" ? 8 : 16;
}

/** Workgroup memory of a variant, in bytes. */
export function gemmWorkgroupBytes(tile: GemmTileName): number {
  const t = GEMM_TILES[tile];
  return t.stages * t.BK * (t.BM + t.BN + 2 * t.pad) * 4;
}

/**
 * Per-invocation loop iterations of a GEMM with inner dimension K: the loop runs K steps + 1
 * half-steps, `stages` per iteration.
 */
export function gemmLoopBound(K: number, tile: GemmTileName = DEFAULT_GEMM_VARIANT): number {
  const t = GEMM_TILES[tile];
  return Math.max(1, Math.ceil((Math.ceil(K / t.BK) + 1) / t.stages));
}

/** The variant used for M rows unless one is named. */
export function gemmTileFor(M: number): GemmTileName {
  return M >= GEMM_SMALL_M_BELOW ? DEFAULT_GEMM_VARIANT : "small";
}

/** Record one GEMM (see {@link GemmArgs}). */
export function encodeGemm(ctx: PrefillContext, pass: GPUComputePassEncoder, a: GemmArgs): void {
  const { M, N, K, w } = a;
  const fail = (msg: string): never => {
    throw new CapsuleError("invalid_argument", `prefill GEMM ${M}×${N}×${K}: ${msg}`);
  };
  const xOff = a.xOffset ?? 0, yOff = a.yOffset ?? 0, wRow = a.wRow ?? 0;
  if (K % 4 !== 0 || a.xStride % 4 !== 0 || xOff % 4 !== 0) {
    fail("K, the input stride and offset must be multiples of 4");
  }
  if (a.swiglu && N % 2 !== 0) fail("SwiGLU needs an even number of outputs");
  const wt = a.transposed ?? false;
  if (wt && w.format === "int8") fail("transposed int8 weights are not supported");
  if (w.format === "int8" && !w.scales) fail("int8 weights need scales");
  if (w.format === "int8" && a.batch && a.batch.count > 1 && a.batch.wRowStep !== 0) {
    fail("batched int8 weights are not supported");
  }
  const pc = perChunk(w.format);
  const batch = a.batch ?? { count: 1, xStep: 0, wRowStep: 0, yStep: 0 };
  const lastRow = wRow + (batch.count - 1) * batch.wRowStep + (wt ? K : N);
  if (lastRow > w.rows) fail(`weight rows ${wRow}..${lastRow} exceed its ${w.rows} rows`);
  if ((wt ? N : K) > w.cols || w.chunks * pc < w.cols) {
    fail(`weight of ${w.rows}×${w.cols} (${w.chunks} chunks) does not cover the product`);
  }
  if (batch.xStep % 4 !== 0) fail("batch input step must be a multiple of 4");
  if (M === 0 || N === 0 || batch.count === 0) return;

  const tileName = a.tile ?? gemmTileFor(M);
  const t = GEMM_TILES[tileName];
  if (!t) fail(`unknown GEMM variant ${tileName}`);
  const wgBytes = gemmWorkgroupBytes(tileName);
  if (wgBytes > ctx.maxWorkgroupStorage) {
    fail(
      `variant ${tileName} needs ${wgBytes} B of workgroup memory, this GPU has ${ctx.maxWorkgroupStorage}`,
    );
  }
  const WG = (t.BM / t.TM) * (t.BN / t.TN);
  // int8 rows come in 16-value chunks; a K step of 8 loads them as half chunks (vec2<u32>).
  const half = !wt && w.format === "int8" && t.BK < pc;
  const wpc = wt ? (w.format === "f16" ? 8 : 4) : half ? t.BK : pc;
  const unitsPerChunk = half ? pc / wpc : 1;
  const xn = (t.BM * t.BK) / 4;
  const wn = (t.BK * t.BN) / wpc;
  const kernel = ctx.kernel("prefill_gemm.wgsl", {
    BM: t.BM,
    BN: t.BN,
    BK: t.BK,
    TM: t.TM,
    TN: t.TN,
    WG,
    STAGES: t.stages,
    DB: t.stages === 2,
    WARP: t.warpX > 0,
    LX: t.warpX,
    PAD: t.pad,
    WF: w.format !== "f32",
    F16: w.format === "f16",
    I8: w.format === "int8",
    WT: wt,
    WPC: wpc,
    WV: half ? 2 : 4,
    WH: half,
    XI: Math.ceil(xn / WG),
    WI: Math.ceil(wn / WG),
    SWIGLU: a.swiglu ?? false,
  }, "urrrw");
  const params = new Uint32Array([
    M,
    N,
    K,
    a.accumulate ? 1 : 0,
    xOff / 4,
    a.xStride / 4,
    batch.xStep / 4,
    Math.ceil(K / (wt ? pc : wpc)),
    wRow * w.chunks * unitsPerChunk,
    w.chunks * unitsPerChunk,
    batch.wRowStep * w.chunks * unitsPerChunk,
    Math.ceil(N / wpc),
    yOff,
    a.yStride,
    batch.yStep,
    wRow,
  ]);
  ctx.dispatch(
    pass,
    kernel,
    [ctx.uniform(params), a.x, w.buf, w.scales ?? a.x, a.y],
    [Math.ceil(N / t.BN), Math.ceil(M / t.BM), batch.count],
    gemmLoopBound(K, tileName),
  );
}
