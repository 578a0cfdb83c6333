/**
 * Seeded random fill of GPU buffers (`kernels/prefill_fill.wgsl`): synthetic weights for the
 * prefill benchmark are generated on the GPU, never stored or uploaded.
 * @module
 */
import type { PrefillContext } from "./context.ts";

/** Fill `count` 32-bit words of `buf` from word `offset`: f32 values, or f16 pairs, uniform in [lo, hi). */
export function encodeFill(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  buf: GPUBuffer,
  o: { offset?: number; count: number; f16: boolean; lo: number; hi: number; seed: number },
): void {
  if (o.count === 0) return;
  const k = ctx.kernel("prefill_fill.wgsl", { F16: o.f16 }, "uw");
  const prm = new ArrayBuffer(32);
  new Uint32Array(prm, 0, 4).set([o.offset ?? 0, o.count, o.seed >>> 0, 0]);
  new Float32Array(prm, 16, 2).set([o.lo, o.hi]);
  const invocations = Math.ceil(o.count / 16);
  const groups = Math.ceil(invocations / 256);
  const x = Math.min(groups, 65535);
  ctx.dispatch(pass, k, [ctx.uniform(new Uint32Array(prm)), buf], [x, Math.ceil(groups / x)], 16);
}
