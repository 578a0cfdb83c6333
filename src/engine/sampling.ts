/**
 * Token selection: greedy, temperature, top-k, top-p, with a counter-based RNG.
 *
 * The RNG is a pure function of `(seed, draw index)`, so a sampler's whole state is two integers:
 * a capsule can carry it, a GPU kernel can reproduce it with 32-bit integer ops, and a session
 * resumed on another node draws exactly the numbers it would have drawn.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Sampling parameters of a generate call. */
export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = no top-k limit. */
  topK: number;
  /** 1 = no nucleus limit. */
  topP: number;
  /** Unsigned 32-bit seed. */
  seed: number;
}

export type { SamplerState } from "../capsule/snapshot.ts";

/** Greedy defaults. */
export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** Check parameters; throws `invalid_argument` naming the field. */
export function validateSampling(p: SamplingParams): void {
  const bad = (field: string, why: string): never => {
    throw new CapsuleError("invalid_argument", `${field} ${why}`);
  };
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) {
    bad("temperature", "must be a finite number ≥ 0");
  }
  if (!Number.isInteger(p.topK) || p.topK < 0) bad("top_k", "must be an integer ≥ 0");
  if (!(p.topP > 0 && p.topP <= 1)) bad("top_p", "must be in (0, 1]");
  if (!Number.isInteger(p.seed) || p.seed < 0 || p.seed > 0xffffffff) {
    bad("seed", "must be an integer in 0..4294967295");
  }
}

/** A 32-bit avalanche hash of `(seed, counter)` (murmur3 finaliser over a Weyl-mixed input). */
export function hash32(seed: number, counter: number): number {
  let h = (seed ^ Math.imul(counter >>> 0, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h ^ (counter >>> 0) ^ 0x5bd1e995, 0x27d4eb2d);
  h ^= h >>> 15;
  return h >>> 0;
}

/** Uniform in [0, 1) with 24 bits of precision (exactly representable in f32). */
export function uniform(seed: number, counter: number): number {
  return (hash32(seed, counter) >>> 8) / 16777216;
}

/** Index of the largest value (lowest index on ties). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * Choose the next token from `logits`. Greedy uses no randomness; otherwise the one uniform number
 * is `uniform(seed, counter)`, where the engine passes the token's absolute position as `counter`,
 * so generating in one call or in several (on any nodes) with one seed draws the same numbers.
 */
export function sampleToken(logits: Float32Array, p: SamplingParams, counter: number): number {
  if (p.temperature === 0) return argmax(logits);
  const u = uniform(p.seed, counter);
  const n = logits.length;
  // Candidates sorted by logit descending (ties: lower id first), truncated to top-k.
  let idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => logits[b] - logits[a] || a - b);
  if (p.topK > 0 && p.topK < n) idx = idx.slice(0, p.topK);
  const max = logits[idx[0]];
  const probs = idx.map((i) => Math.exp((logits[i] - max) / p.temperature));
  const total = probs.reduce((s, v) => s + v, 0);
  let keep = probs.length;
  if (p.topP < 1) {
    let cum = 0;
    for (let j = 0; j < probs.length; j++) {
      cum += probs[j] / total;
      if (cum >= p.topP) {
        keep = j + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let j = 0; j < keep; j++) mass += probs[j];
  const target = u * mass;
  let cum = 0;
  for (let j = 0; j < keep; j++) {
    cum += probs[j];
    if (target < cum) return idx[j];
  }
  return idx[keep - 1];
}
