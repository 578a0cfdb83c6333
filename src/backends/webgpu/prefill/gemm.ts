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

/** Named tile shapes. */
export type GemmTileName = "large" | "small";

interface Tile {
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}

/** Tile shapes: 128×128 for prompts, 32×64 for short inputs. */
export const GEMM_TILES: Record<GemmTileName, Tile> = {
  large: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8 },
  small: { BM: 32, BN: 64, BK: 16, TM: 4, TN: 4 },
};

function perChunk(f: PrefillWeightFormat): number {
  return f === "f32" ? 4 : f === "f16" ? 8 : 16;
}

/** Per-invocation loop iterations of a GEMM with inner dimension K (one per K step, plus one). */
export function gemmLoopBound(K: number, tile: GemmTileName = "large"): number {
  return Math.ceil(K / GEMM_TILES[tile].BK) + 1;
}

/** The tile used for M rows unless one is named. */
export function gemmTileFor(M: number): GemmTileName {
  return M >= 96 ? "large" : "small";
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
  const WG = (t.BM / t.TM) * (t.BN / t.TN);
  const wpc = wt ? (w.format === "f16" ? 8 : 4) : pc;
  const xn = (t.BM * t.BK) / 4;
  const wn = wt ? (t.BK * t.BN) / wpc : (t.BN * t.BK) / wpc;
  const kernel = ctx.kernel("prefill_gemm.wgsl", {
    ...t,
    WG,
    WF: w.format !== "f32",
    F16: w.format === "f16",
    I8: w.format === "int8",
    WT: wt,
    WPC: wpc,
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
    Math.ceil(K / pc),
    wRow * w.chunks,
    w.chunks,
    batch.wRowStep * w.chunks,
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
