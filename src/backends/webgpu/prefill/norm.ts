/**
 * Row norms of prefill activations (`kernels/prefill_norm.wgsl`): RMSNorm of token rows (the
 * input and post-attention norms; CPU twin `rmsNormRows`) and the per-head gated RMSNorm of the
 * linear-attention outputs (CPU twin `gatedRmsNorm`).
 * @module
 */
import type { PrefillContext } from "./context.ts";

/** Arguments of {@link encodeRmsNorm}: `y[t] = x[t] / rms(x[t]) · weight`. */
export interface RmsNormArgs {
  T: number;
  dim: number;
  eps: number;
  x: GPUBuffer;
  xOffset?: number;
  xStride: number;
  /** `[dim]` f32 from value `weightOffset`. */
  weight: GPUBuffer;
  weightOffset?: number;
  /** Must not be `x`. */
  y: GPUBuffer;
  yOffset?: number;
  yStride: number;
}

/** Arguments of {@link encodeGatedNorm}: per token and head, in place on `x`. */
export interface GatedNormArgs {
  T: number;
  heads: number;
  /** Values per head. */
  dim: number;
  eps: number;
  /** SiLU (Qwen GDN) or sigmoid (Kimi KDA) of the gate. */
  act: "silu" | "sigmoid";
  /** Head h of token t at `x[xOffset + t·xStride + h·dim + i]`. */
  x: GPUBuffer;
  xOffset?: number;
  xStride: number;
  /** Same indexing with `gateOffset`, `gateStride`. */
  gate: GPUBuffer;
  gateOffset?: number;
  gateStride: number;
  /** `[dim]` f32 from value `weightOffset`. */
  weight: GPUBuffer;
  weightOffset?: number;
}

/** Per-invocation loop count of a norm over rows of `dim` values. */
export function normLoopBound(dim: number): number {
  return 2 * Math.ceil(dim / 64) + 6;
}

/** Token grid (y, z) covering T tokens with at most 65,535 per dimension. */
export function tokenGrid(T: number): [number, number] {
  const y = Math.min(T, 65535);
  return [y, Math.ceil(T / 65535)];
}

/** Record the RMSNorm of T rows. */
export function encodeRmsNorm(ctx: PrefillContext, pass: GPUComputePassEncoder, a: RmsNormArgs): void {
  if (a.T === 0) return;
  const k = ctx.kernel(
    "prefill_norm.wgsl",
    { D: a.dim, EPS: a.eps, GATED: false, ACT_SIGMOID: false },
    "urrw",
  );
  const params = ctx.uniform(
    new Uint32Array([a.T, a.xOffset ?? 0, a.xStride, a.yOffset ?? 0, a.yStride, 0, 0, a.weightOffset ?? 0]),
  );
  ctx.dispatch(pass, k, [params, a.weight, a.x, a.y], [1, ...tokenGrid(a.T)], normLoopBound(a.dim));
}

/** Record the gated RMSNorm of T × heads rows, in place. */
export function encodeGatedNorm(ctx: PrefillContext, pass: GPUComputePassEncoder, a: GatedNormArgs): void {
  if (a.T === 0) return;
  const k = ctx.kernel("prefill_norm.wgsl", {
    D: a.dim,
    EPS: a.eps,
    GATED: true,
    ACT_SIGMOID: a.act === "sigmoid",
  }, "urrw");
  const params = ctx.uniform(
    new Uint32Array([
      a.T,
      a.xOffset ?? 0,
      a.xStride,
      0,
      0,
      a.gateOffset ?? 0,
      a.gateStride,
      a.weightOffset ?? 0,
    ]),
  );
  ctx.dispatch(pass, k, [params, a.weight, a.gate, a.x], [a.heads, ...tokenGrid(a.T)], normLoopBound(a.dim));
}
