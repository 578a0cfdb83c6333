import { assert, assertEquals, assertLess } from "@std/assert";
import fc from "fast-check";
import { deltaRuleChunked, deltaRuleStep, l2NormRows, roundBf16, shortConv, topK } from "./ops.ts";
import { relL2 } from "../../engine/verify.ts";

/** Deterministic pseudo-random numbers for reproducible test inputs. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 4294967296) * 2 - 1;
  };
}

function randomArray(n: number, r: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => r() * scale);
}

interface DeltaCase {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  g: Float32Array;
  beta: Float32Array;
  s0: Float32Array;
}

function deltaCase(t: number, dk: number, dv: number, perChannel: boolean, seed: number): DeltaCase {
  const r = rng(seed);
  const q = l2NormRows(randomArray(t * dk, r), dk, 1 / Math.sqrt(dk));
  const k = l2NormRows(randomArray(t * dk, r), dk);
  const v = randomArray(t * dv, r);
  // Log decays in (-1, 0]: a realistic range (softplus · exp(A_log)).
  const g = Float32Array.from({ length: t * (perChannel ? dk : 1) }, () => -Math.abs(r()) * 0.5);
  const beta = Float32Array.from({ length: t }, () => 0.5 + 0.5 * Math.abs(r()));
  const s0 = randomArray(dk * dv, r, 0.3);
  return { q, k, v, g, beta, s0 };
}

function recurrent(c: DeltaCase, t: number, dk: number, dv: number) {
  const S = c.s0.slice();
  const out = new Float32Array(t * dv);
  const gw = c.g.length / t;
  const o = new Float32Array(dv);
  for (let s = 0; s < t; s++) {
    deltaRuleStep(
      S,
      c.q.subarray(s * dk, (s + 1) * dk),
      c.k.subarray(s * dk, (s + 1) * dk),
      c.v.subarray(s * dv, (s + 1) * dv),
      c.g.subarray(s * gw, (s + 1) * gw),
      c.beta[s],
      o,
    );
    out.set(o, s * dv);
  }
  return { S, out };
}

for (const perChannel of [false, true]) {
  const name = perChannel ? "KDA (per-channel decay)" : "GDN (scalar decay)";
  for (const t of [1, 63, 64, 65, 200]) {
    Deno.test(`chunked delta rule equals the recurrence for ${name}, ${t} tokens`, () => {
      const dk = 16, dv = 12;
      const c = deltaCase(t, dk, dv, perChannel, 1000 + t);
      const ref = recurrent(c, t, dk, dv);
      const S = c.s0.slice();
      const out = deltaRuleChunked(S, c.q, c.k, c.v, c.g, c.beta, t, dk, dv);
      assertLess(relL2(out, ref.out), 1e-5);
      assertLess(relL2(S, ref.S), 1e-5);
    });
  }
}

Deno.test("chunked delta rule split at any point equals one call (property)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 150 }),
      fc.integer({ min: 1, max: 149 }),
      fc.boolean(),
      fc.integer({ min: 1, max: 1 << 30 }),
      (t, cutRaw, perChannel, seed) => {
        const cut = 1 + (cutRaw % (t - 1));
        const dk = 8, dv = 6, gw = perChannel ? dk : 1;
        const c = deltaCase(t, dk, dv, perChannel, seed);
        const whole = c.s0.slice();
        const outWhole = deltaRuleChunked(whole, c.q, c.k, c.v, c.g, c.beta, t, dk, dv);
        const split = c.s0.slice();
        const a = deltaRuleChunked(
          split,
          c.q.subarray(0, cut * dk),
          c.k.subarray(0, cut * dk),
          c.v.subarray(0, cut * dv),
          c.g.subarray(0, cut * gw),
          c.beta.subarray(0, cut),
          cut,
          dk,
          dv,
        );
        const b = deltaRuleChunked(
          split,
          c.q.subarray(cut * dk),
          c.k.subarray(cut * dk),
          c.v.subarray(cut * dv),
          c.g.subarray(cut * gw),
          c.beta.subarray(cut),
          t - cut,
          dk,
          dv,
        );
        const joined = new Float32Array(t * dv);
        joined.set(a);
        joined.set(b, cut * dv);
        return relL2(joined, outWhole) < 1e-5 && relL2(split, whole) < 1e-5;
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("short conv over a sequence equals token-by-token steps and keeps the last K inputs", () => {
  const r = rng(7);
  const C = 5, K = 4, T = 9;
  const w = randomArray(C * K, r);
  const u = randomArray(T * C, r);
  const win0 = randomArray(C * K, r);
  const winA = win0.slice();
  const all = shortConv(u, T, winA, w, C, K);
  const winB = win0.slice();
  for (let t = 0; t < T; t++) {
    const one = shortConv(u.subarray(t * C, (t + 1) * C), 1, winB, w, C, K);
    assertLess(relL2(one, all.subarray(t * C, (t + 1) * C)), 1e-7);
  }
  assertEquals(winA, winB);
  for (let c = 0; c < C; c++) {
    for (let j = 0; j < K; j++) assertEquals(winA[c * K + j], u[(T - K + j) * C + c]);
  }
});

Deno.test("bf16 rounding is round-to-nearest-even", () => {
  const x = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 0.1, -2.5, Infinity]);
  roundBf16(x);
  assertEquals(Array.from(x), [1, 1, 1 + 2 ** -6, 0.10009765625, -2.5, Infinity]);
});

Deno.test("topK returns the largest values, lower index first on ties", () => {
  assertEquals(topK([1, 5, 5, 3, 9], 3), [4, 1, 2]);
  assert(topK([], 2).length === 0);
});
