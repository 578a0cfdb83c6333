/**
 * Helpers shared by the prefill tests and benchmark: a seeded random source, relative L2 error,
 * and the GPU context every test file opens once.
 * @module
 */
import { PrefillContext, type PrefillContextOptions } from "./context.ts";
import { openPrefillGpu, type PrefillGpu } from "./gpu.ts";

/** A seeded uniform random source (mulberry32). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform values in `[lo, hi)`. */
export function randomArray(rand: () => number, n: number, lo = -1, hi = 1): Float32Array<ArrayBuffer> {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}

/** ‖a − b‖ / ‖b‖ (0 when both are zero). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relL2: lengths ${a.length} and ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (!Number.isFinite(num)) return Infinity;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Split `t` into random positive pieces (at least one), seeded. */
export function randomPieces(rand: () => number, t: number, maxPieces = 4): number[] {
  const n = Math.max(1, Math.min(t, 1 + Math.floor(rand() * maxPieces)));
  const cuts = new Set<number>();
  while (cuts.size < n - 1) cuts.add(1 + Math.floor(rand() * (t - 1)));
  const pts = [0, ...[...cuts].sort((a, b) => a - b), t];
  return pts.slice(1).map((p, i) => p - pts[i]);
}

let shared: Promise<PrefillGpu> | null = null;

/** One GPU per test process (devices are slow to create on the software adapter). */
export function testGpu(): Promise<PrefillGpu> {
  shared ??= openPrefillGpu();
  return shared;
}

/** A context on the shared test GPU, counting loops by default so every test checks its plans. */
export async function testContext(opts: PrefillContextOptions = {}): Promise<PrefillContext> {
  const gpu = await testGpu();
  return new PrefillContext(gpu.device, { countLoops: true, ...opts });
}

/** Record `fn` into one compute pass and submit it; fail on any validation error (shader included). */
export async function run(ctx: PrefillContext, fn: (pass: GPUComputePassEncoder) => void): Promise<void> {
  ctx.device.pushErrorScope("validation");
  const enc = ctx.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  fn(pass);
  pass.end();
  ctx.device.queue.submit([enc.finish()]);
  const err = await ctx.device.popErrorScope();
  if (err) throw new Error(`GPU validation: ${err.message}`);
}

/** Fail if any counted dispatch ran more loop iterations than planned or than Mesa's cap. */
export async function checkLoops(ctx: PrefillContext, cap = 65_535): Promise<number> {
  const report = await ctx.loopReport();
  let worst = 0;
  for (const r of report) {
    if (r.measured > r.planned) {
      throw new Error(`${r.label}: measured ${r.measured} loop iterations, planned ${r.planned}`);
    }
    if (r.measured >= cap) throw new Error(`${r.label}: ${r.measured} loop iterations reach the cap ${cap}`);
    worst = Math.max(worst, r.measured);
  }
  return worst;
}
