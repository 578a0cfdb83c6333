/**
 * Prefill short convolution (`kernels/prefill_conv.wgsl`): the causal depthwise conv + SiLU of a
 * linear-attention layer over T new tokens, continuing from the carried window and leaving it
 * updated (CPU twin: `shortConv`).
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import type { PrefillContext } from "./context.ts";

/** Tokens one conv invocation walks (its loop count). */
export const CONV_TOKENS_PER_INVOCATION = 64;

/**
 * How a conv window is stored per channel (`K` raw inputs each):
 * `"ring"`: the decode backend's ring, the input of absolute position q in entry `q mod K`;
 * `"oldest-first"`: the session state's `[C, K]` layout (entry 0 the oldest).
 */
export type ConvWindowLayout = "ring" | "oldest-first";

/** Arguments of {@link encodeConv}. */
export interface ConvArgs {
  /** New tokens. */
  T: number;
  /** Absolute position of the first new token (used by the ring layout). */
  p0: number;
  channels: number;
  /** Taps K. */
  kernel: number;
  /** Raw (pre-conv) inputs: token t, channel c at `rawOffset + t·rawStride + c`. */
  raw: GPUBuffer;
  rawOffset?: number;
  rawStride: number;
  /** `[C, K]` f32 taps, tap K−1 multiplying the current token. */
  weights: GPUBuffer;
  /** The window (`[C, K]` from value `windowOffset`), read then updated. */
  window: GPUBuffer;
  windowOffset?: number;
  windowLayout: ConvWindowLayout;
  /** Activated outputs: token t, channel c at `outOffset + t·outStride + c`. */
  out: GPUBuffer;
  outOffset?: number;
  outStride: number;
}

/** Record the conv of T tokens and the window update (two dispatches). */
export function encodeConv(ctx: PrefillContext, pass: GPUComputePassEncoder, a: ConvArgs): void {
  if (a.kernel < 2) throw new CapsuleError("invalid_argument", "prefill conv needs at least 2 taps");
  if (a.window === a.raw || a.window === a.out || a.raw === a.out) {
    throw new CapsuleError(
      "invalid_argument",
      "prefill conv: raw inputs, outputs and window must be distinct buffers",
    );
  }
  if (a.T === 0) return;
  const TB = CONV_TOKENS_PER_INVOCATION;
  const base = { CK: a.kernel, TB, RING: a.windowLayout === "ring" };
  const params = ctx.uniform(
    new Uint32Array([
      a.T,
      a.p0,
      a.channels,
      a.windowOffset ?? 0,
      a.rawOffset ?? 0,
      a.rawStride,
      a.outOffset ?? 0,
      a.outStride,
    ]),
  );
  const conv = ctx.kernel("prefill_conv.wgsl", { ...base, CONV: 1 }, "urrrw");
  ctx.dispatch(pass, conv, [params, a.raw, a.weights, a.window, a.out], [
    Math.ceil(a.channels / 64),
    Math.ceil(a.T / TB),
  ], TB);
  const win = ctx.kernel("prefill_conv.wgsl", { ...base, CONV: 0 }, "urrw");
  ctx.dispatch(pass, win, [params, a.raw, a.weights, a.window], [Math.ceil(a.channels / 64)], 0);
}
