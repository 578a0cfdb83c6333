/**
 * Helpers shared by the prefill tests and benchmark: a seeded random source, relative L2 error,
 * and the GPU context every test file opens once.
 * @module
 */
import { PrefillContext, type PrefillContextOptions } from "./context.ts";
import { openPrefillGpu, type PrefillGpu } from "./gpu.ts";
export { mulberry32 as rng, randomArray } from "../../../util/random.ts";
export { relL2 } from "../../../engine/verify.ts";

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
