/**
 * Shared setup of the WebGPU chunked-prefill tests: a fixture on both backends, seeded random
 * prompts and splits, and comparisons of logits and states with the CPU reference.
 */
import { assertEquals, assertLess } from "@std/assert";
import { CpuBackend } from "../../src/engine/backend.ts";
import { createState, type SessionState } from "../../src/engine/state.ts";
import { relL2 } from "../../src/engine/verify.ts";
import { Checkpoint } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import type { WebGpuBackend, WebGpuBackendOptions } from "../../src/backends/webgpu/backend.ts";
import type { FIXTURE_MODELS } from "../support/fixtures.ts";
import { openFixture } from "./helpers.ts";

/** A fixture model name. */
export type Fixture = (typeof FIXTURE_MODELS)[number];

/**
 * Tolerance on rel_l2. The fixtures' bf16 weights are exact in f16, so the GPU differs from the
 * f32 reference only by summation order (~3e-6 measured); 1e-3 leaves room for a rare near-tie
 * in MoE routing while any real error (a wrong row, chunk or state hand-over) is far above it.
 */
export const TOL = 1e-3;

/** Seeded uniform source (mulberry32). */
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

/** `n` random token ids below `vocab`. */
export function randomIds(rand: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(rand() * vocab));
}

/** Split `t` tokens into 2–4 random positive pieces (one piece when t = 1). */
export function randomPieces(rand: () => number, t: number): number[] {
  if (t === 1) return [1];
  const n = Math.min(t, 2 + Math.floor(rand() * 3));
  const cuts = new Set<number>();
  while (cuts.size < n - 1) cuts.add(1 + Math.floor(rand() * (t - 1)));
  const pts = [0, ...[...cuts].sort((a, b) => a - b), t];
  return pts.slice(1).map((p, i) => p - pts[i]);
}

/** Largest rel_l2 over every state tensor (positions and KV row counts must agree). */
export function stateError(got: SessionState, want: SessionState, what: string): number {
  assertEquals(got.position, want.position, `${what}: position`);
  let worst = 0;
  got.layers.forEach((l, i) => {
    const r = want.layers[i];
    if (l.kind === "linear" && r.kind === "linear") {
      worst = Math.max(worst, relL2(l.conv, r.conv), relL2(l.recurrent, r.recurrent));
    } else if (l.kind === "attention" && r.kind === "attention") {
      assertEquals(l.keys.length, r.keys.length, `${what}: layer ${i} KV rows`);
      worst = Math.max(worst, relL2(l.keys.view(), r.keys.view()), relL2(l.values.view(), r.values.view()));
    } else {
      throw new Error(`${what}: layer ${i} kinds differ`);
    }
  });
  return worst;
}

/** One fixture on the WebGPU backend and on the CPU reference. */
export interface Pair {
  gpu: WebGpuBackend;
  cpu: CpuBackend;
}

/** Open a fixture on both backends (the caller disposes `gpu`). */
export async function openPair(name: Fixture, opts: WebGpuBackendOptions): Promise<Pair> {
  const { backend, config, dir } = await openFixture(name, opts);
  const ckpt = await Checkpoint.open(dir);
  try {
    return { gpu: backend, cpu: new CpuBackend(config, await loadWeights(ckpt, config, dir)) };
  } finally {
    ckpt.close();
  }
}

/** A reference run of a prompt in one call: every row's logits and the final state. */
export interface Reference {
  logits: Float32Array;
  state: SessionState;
}

/** Run `tokens` through the CPU reference in one call. */
export async function reference(p: Pair, tokens: number[]): Promise<Reference> {
  const state = createState(p.cpu.config);
  const { logits } = await p.cpu.forward(state, tokens, { logits: "all" });
  return { logits, state };
}

/**
 * Feed `tokens` to a fresh GPU state in `pieces` (logits "all" and "last" alternating) and compare
 * every piece's logits with the reference rows, and the final state with the reference state.
 */
export async function compareWithReference(
  gpu: WebGpuBackend,
  ref: Reference,
  tokens: number[],
  pieces: number[],
  what: string,
): Promise<void> {
  const V = gpu.config.vocabSize;
  const g = createState(gpu.config);
  let done = 0;
  for (const [k, n] of pieces.entries()) {
    const all = k % 2 === 0;
    const a = await gpu.forward(g, tokens.slice(done, done + n), { logits: all ? "all" : "last" });
    const want = ref.logits.subarray((all ? done : done + n - 1) * V, (done + n) * V);
    assertEquals(a.logits.length, want.length, `${what}: piece ${k} logits length`);
    const e = relL2(a.logits, want);
    assertLess(e, TOL, `${what}: piece ${k} of [${pieces}] (${n} tokens) logits rel_l2 ${e}`);
    done += n;
  }
  const es = stateError(g, ref.state, what);
  assertLess(es, TOL, `${what}: final state rel_l2 ${es}`);
}

/**
 * Random prompts of each length through the GPU in one call and in random pieces, against one
 * reference run each; returns the number of tokens fed to the GPU.
 */
export async function checkLengths(p: Pair, seed: number, lengths: number[], what: string): Promise<number> {
  const rand = rng(seed);
  let fed = 0;
  for (const T of lengths) {
    const tokens = randomIds(rand, T, p.gpu.config.vocabSize);
    const ref = await reference(p, tokens);
    await compareWithReference(p.gpu, ref, tokens, [T], `${what} T=${T} one call`);
    const pieces = randomPieces(rand, T);
    await compareWithReference(p.gpu, ref, tokens, pieces, `${what} T=${T} pieces [${pieces}]`);
    fed += 2 * T;
  }
  return fed;
}
