import { assertEquals, assertGreater, assertLess } from "@std/assert";
import { applyRope, attendGqa, rmsNormRows, ropeInvFreq, sigmoid, softmaxInPlace } from "../../cpu/ops.ts";
import type { PrefillContext } from "./context.ts";
import {
  attentionPlan,
  ATTN_VARIANT_NAMES,
  ATTN_VARIANTS,
  type AttnVariantName,
  encodeAttention,
  encodeGatedAttentionPrep,
  encodeMlaPrep,
} from "./attention.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, randomPieces, relL2, rng, run, testContext } from "./testing.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

/** Round to f16 (nearest even), as an f16 KV cache stores values. */
function f16(x: Float32Array): Float32Array {
  return Float32Array.from(new Float16Array(x));
}

/** Write f32 `data` into a cache buffer at value `at`: as is, or (kv16) as f16 pairs. */
function writeKv(
  dev: GPUDevice,
  buf: GPUBuffer,
  at: number,
  data: Float32Array<ArrayBuffer>,
  kv16: boolean,
): void {
  if (data.length === 0) return; // an empty write panics Deno's WebGPU
  if (kv16) dev.queue.writeBuffer(buf, at * 2, new Float16Array(data));
  else dev.queue.writeBuffer(buf, at * 4, data);
}

/** Read `n` cache values from value `at` (f16 pairs widened when kv16; `at` even then). */
async function readKv(
  dev: GPUDevice,
  buf: GPUBuffer,
  n: number,
  at: number,
  kv16: boolean,
): Promise<Float32Array> {
  if (!kv16) return await readF32(dev, buf, n, at);
  const w = await readF32(dev, buf, Math.ceil(n / 2), at / 2);
  return Float32Array.from(new Float16Array(w.buffer, w.byteOffset, n));
}

interface GatedShape {
  hq: number;
  hkv: number;
  d: number;
  rot: number;
}

/** CPU: forward.ts's gated attention after the projections, for tokens at p0 … p0+T−1. */
function cpuGated(
  s: GatedShape,
  proj: Float32Array,
  PS: number,
  T: number,
  p0: number,
  keys: Float32Array,
  values: Float32Array,
  norms: Float32Array,
  invFreq: Float32Array,
  kv16 = false,
) {
  const { hq, hkv, d, rot } = s;
  const cache = (x: Float32Array) => (kv16 ? f16(x) : x);
  const kvRow = hkv * d;
  const K = new Float32Array((p0 + T) * kvRow), V = new Float32Array((p0 + T) * kvRow);
  K.set(keys.subarray(0, p0 * kvRow));
  V.set(values.subarray(0, p0 * kvRow));
  const out = new Float32Array(T * hq * d);
  for (let t = 0; t < T; t++) {
    const row = proj.subarray(t * PS, (t + 1) * PS);
    const q = new Float32Array(hq * d), gate = new Float32Array(hq * d);
    for (let h = 0; h < hq; h++) {
      q.set(row.subarray(h * 2 * d, h * 2 * d + d), h * d);
      gate.set(row.subarray(h * 2 * d + d, (h + 1) * 2 * d), h * d);
    }
    rmsNormRows(q, norms.subarray(0, d), 1e-6);
    const k = rmsNormRows(row.slice(hq * 2 * d, hq * 2 * d + kvRow), norms.subarray(d, 2 * d), 1e-6);
    applyRope(q, d, rot, invFreq, p0 + t);
    applyRope(k, d, rot, invFreq, p0 + t);
    K.set(cache(k), (p0 + t) * kvRow);
    V.set(cache(row.slice(hq * 2 * d + kvRow, hq * 2 * d + 2 * kvRow)), (p0 + t) * kvRow);
    const o = attendGqa(q, K, V, p0 + t + 1, hq, hkv, d, 1 / Math.sqrt(d));
    for (let j = 0; j < hq * d; j++) out[t * hq * d + j] = o[j] * sigmoid(gate[j]);
  }
  return { out, K, V };
}

async function gatedCase(
  ctx: PrefillContext,
  s: GatedShape,
  T: number,
  p0: number,
  pieces: number[],
  seed: number,
  memoryLimit?: number,
  kv16 = false,
  variant?: AttnVariantName,
) {
  const rand = rng(seed);
  const { hq, hkv, d, rot } = s;
  const plan = memoryLimit === undefined && variant === undefined ? undefined : attentionPlan(
    {
      loopBudget: ctx.loopBudget,
      maxWorkgroupStorage: memoryLimit ?? ctx.maxWorkgroupStorage,
      maxBinding: ctx.maxBinding,
    },
    { heads: hq, kvHeads: hkv, qkDim: d, valueDim: d, values: ctx.scratch("dummy", 16) },
    variant,
  );
  const PS = hq * 2 * d + 2 * hkv * d + 4;
  const proj = randomArray(rand, T * PS, -2, 2);
  const kvRow = hkv * d;
  const keys = randomArray(rand, p0 * kvRow), values = randomArray(rand, p0 * kvRow);
  if (kv16) { for (const x of [keys, values]) x.set(f16(x)); }
  const norms = randomArray(rand, 2 * d, 0.5, 1.5);
  const invFreq = ropeInvFreq(rot, 10000);
  const want = cpuGated(s, proj, PS, T, p0, keys, values, norms, invFreq, kv16);

  const dev = ctx.device;
  const ROW0 = 3; // the session's rows start at row 3 of the cache buffers
  const words = (ROW0 + p0 + T) * kvRow / (kv16 ? 2 : 1);
  const K = zeros(dev, words), V = zeros(dev, words);
  writeKv(dev, K, ROW0 * kvRow, keys, kv16);
  writeKv(dev, V, ROW0 * kvRow, values, kv16);
  const projBuf = upload(dev, proj), normBuf = upload(dev, norms), freqBuf = upload(dev, invFreq);
  const qbuf = zeros(dev, T * hq * d), out = zeros(dev, T * hq * d);
  let done = 0;
  for (const n of pieces) {
    await run(ctx, (pass) => {
      encodeGatedAttentionPrep(ctx, pass, {
        T: n,
        p0: p0 + done,
        heads: hq,
        kvHeads: hkv,
        headDim: d,
        rotaryDim: rot,
        eps: 1e-6,
        src: projBuf,
        srcOffset: done * PS,
        srcStride: PS,
        norms: normBuf,
        invFreq: freqBuf,
        q: qbuf,
        keys: K,
        values: V,
        cacheRow0: ROW0,
        kvF16: kv16,
      });
      encodeAttention(ctx, pass, {
        T: n,
        p0: p0 + done,
        heads: hq,
        kvHeads: hkv,
        qkDim: d,
        keyDim1: d,
        valueDim: d,
        scale: 1 / Math.sqrt(d),
        q: qbuf,
        keys1: K,
        values: V,
        cacheRow0: ROW0,
        kvF16: kv16,
        gate: { buf: projBuf, offset: done * PS, stride: PS },
        out,
        outOffset: done * hq * d,
        outStride: hq * d,
        plan,
      });
    });
    done += n;
  }
  const got = await readF32(dev, out, T * hq * d);
  const gotK = await readKv(dev, K, (p0 + T) * kvRow, ROW0 * kvRow, kv16);
  const gotV = await readKv(dev, V, (p0 + T) * kvRow, ROW0 * kvRow, kv16);
  return { out: relL2(got, want.out), K: relL2(gotK, want.K), V: relL2(gotV, want.V), plan };
}

Deno.test(
  "gated attention prefill (q/k norm, partial RoPE, GQA, output gate) equals the CPU path, appending to a cache",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(31);
    const s = { hq: 4, hkv: 2, d: 32, rot: 8 };
    for (const T of [1, 63, 64, 65, 200]) {
      const p0 = Math.floor(rand() * 40);
      for (const pieces of [[T], randomPieces(rand, T, 3)]) {
        const e = await gatedCase(ctx, s, T, p0, pieces, 100 + T);
        assertLess(e.out, 1e-5, `T=${T} p0=${p0} pieces=${pieces} out ${e.out}`);
        assertLess(e.K, 1e-5, `K ${e.K}`);
        assertLess(e.V, 1e-7, `V ${e.V}`);
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "gated attention prefill splits long contexts into passes that carry the online softmax",
  opts,
  async () => {
    // A small loop budget forces passes of a few key tiles each.
    const ctx = await testContext({ loopBudget: 60 });
    const s = { hq: 8, hkv: 1, d: 16, rot: 16 };
    const plan = attentionPlan(ctx, {
      heads: 8,
      kvHeads: 1,
      qkDim: 16,
      valueDim: 16,
      values: ctx.scratch("dummy", 16),
    });
    const e = await gatedCase(ctx, s, 300, 700, [300], 7);
    assertLess(e.out, 1e-5, `out ${e.out} (keys per pass ${plan.keysPerPass})`);
    assertGreater(Math.ceil(1000 / plan.keysPerPass), 1, "the test needs several passes");
    await checkLoops(ctx, 60);
  },
);

Deno.test(
  "gated attention prefill gives the CPU result under the smaller tile plans that tighter workgroup memory forces",
  opts,
  async () => {
    const ctx = await testContext();
    // Limits picked to reach distinct paths: short key tiles with idle score invocations and 4-dim
    // steps (d 64 at 5000 B), 3 heads per KV head on 72 invocations with 4-wide O blocks (d 48
    // at 32 KiB), and fewer rows per workgroup (d 48 at 4000 B).
    const cases: [GatedShape, number][] = [
      [{ hq: 8, hkv: 2, d: 64, rot: 16 }, 5000],
      [{ hq: 6, hkv: 2, d: 48, rot: 48 }, 32768],
      [{ hq: 6, hkv: 2, d: 48, rot: 48 }, 4000],
    ];
    const seen = new Set<string>();
    for (const [s, limit] of cases) {
      const e = await gatedCase(ctx, s, 70, 45, [50, 20], 80 + limit, limit);
      const p = e.plan!;
      seen.add(`${p.RQ}/${p.BKV}/${p.BK}/${p.BV}/${p.TNO}/${p.SWG < p.WG}`);
      const at = `d=${s.d} limit ${limit}: RQ ${p.RQ} BKV ${p.BKV} BK ${p.BK} BV ${p.BV} O ${p.TMO}×${p.TNO}`;
      assertLess(e.out, 1e-5, `${at}: out ${e.out}`);
    }
    assertGreater(seen.size, 2, "the limits give different plans");
    await checkLoops(ctx);
  },
);

interface MlaShape {
  hh: number;
  r: number;
  dr: number;
  dn: number;
}

/** Run MLA prep + attention for T tokens after p0 cached rows; relative errors against the CPU. */
async function mlaCase(
  ctx: PrefillContext,
  s: MlaShape,
  T: number,
  p0: number,
  seed: number,
  kv16 = false,
  variant?: AttnVariantName,
) {
  const rand = rng(seed);
  const { hh, r, dr, dn } = s;
  const QW = r + dr;
  const PS = hh * (dn + dr) + r + dr;
  const proj = randomArray(rand, T * PS, -2, 2);
  const kvNorm = randomArray(rand, r, 0.5, 1.5);
  const oldC = randomArray(rand, p0 * r), oldKr = randomArray(rand, p0 * dr);
  if (kv16) { for (const x of [oldC, oldKr]) x.set(f16(x)); }
  const cache = (x: Float32Array) => (kv16 ? f16(x) : x);
  // The absorbed queries' latent part is an input here (the GEMM is tested on its own).
  const qc = randomArray(rand, T * hh * r);
  // CPU: cache rows, then softmax over them with scores qc·c + q_rope·kr.
  const C = new Float32Array((p0 + T) * r), KR = new Float32Array((p0 + T) * dr);
  C.set(oldC);
  KR.set(oldKr);
  for (let t = 0; t < T; t++) {
    const row = proj.subarray(t * PS + hh * (dn + dr), (t + 1) * PS);
    C.set(cache(rmsNormRows(row.slice(0, r), kvNorm, 1e-5)), (p0 + t) * r);
    KR.set(cache(row.slice(r, r + dr)), (p0 + t) * dr);
  }
  const want = new Float32Array(T * hh * r);
  for (let t = 0; t < T; t++) {
    const n = p0 + t + 1;
    for (let h = 0; h < hh; h++) {
      const p = new Float64Array(n);
      for (let m = 0; m < n; m++) {
        let sc = 0;
        for (let j = 0; j < r; j++) sc += qc[(t * hh + h) * r + j] * C[m * r + j];
        for (let j = 0; j < dr; j++) sc += proj[t * PS + h * (dn + dr) + dn + j] * KR[m * dr + j];
        p[m] = sc / Math.sqrt(dn + dr);
      }
      softmaxInPlace(p, n);
      for (let j = 0; j < r; j++) {
        let acc = 0;
        for (let m = 0; m < n; m++) acc += p[m] * C[m * r + j];
        want[(t * hh + h) * r + j] = acc;
      }
    }
  }
  const dev = ctx.device;
  const div = kv16 ? 2 : 1;
  const latent = zeros(dev, (p0 + T) * r / div), ropeKeys = zeros(dev, (p0 + T) * dr / div);
  if (p0) {
    writeKv(dev, latent, 0, oldC, kv16);
    writeKv(dev, ropeKeys, 0, oldKr, kv16);
  }
  const qHost = new Float32Array(T * hh * QW);
  for (let i = 0; i < T * hh; i++) qHost.set(qc.subarray(i * r, (i + 1) * r), i * QW);
  const q = upload(dev, qHost), out = zeros(dev, T * hh * r), src = upload(dev, proj);
  await run(ctx, (pass) => {
    encodeMlaPrep(ctx, pass, {
      T,
      p0,
      heads: hh,
      rank: r,
      ropeDim: dr,
      nopeDim: dn,
      eps: 1e-5,
      src,
      srcStride: PS,
      kvNorm: upload(dev, kvNorm),
      q,
      latent,
      ropeKeys,
      kvF16: kv16,
    });
    encodeAttention(ctx, pass, {
      T,
      p0,
      heads: hh,
      kvHeads: 1,
      qkDim: QW,
      keyDim1: r,
      valueDim: r,
      scale: 1 / Math.sqrt(dn + dr),
      q,
      keys1: latent,
      keys2: ropeKeys,
      kvF16: kv16,
      out,
      outStride: hh * r,
      variant,
    });
  });
  return {
    out: relL2(await readF32(dev, out, T * hh * r), want),
    C: relL2(await readKv(dev, latent, (p0 + T) * r, 0, kv16), C),
    KR: relL2(await readKv(dev, ropeKeys, (p0 + T) * dr, 0, kv16), KR),
  };
}

Deno.test("MLA attention prefill over the latent cache equals the absorbed CPU form", opts, async () => {
  const ctx = await testContext();
  for (const [T, p0] of [[1, 0], [65, 10], [200, 3]]) {
    const e = await mlaCase(ctx, { hh: 4, r: 32, dr: 8, dn: 16 }, T, p0, 41 + T);
    assertLess(e.out, 1e-5, `T=${T} p0=${p0}`);
    assertLess(e.C, 1e-6);
    assertLess(e.KR, 1e-7);
  }
  await checkLoops(ctx);
});

Deno.test(
  "MLA attention prefill at Kimi Linear's size (32 heads, rank 512 + rope 64) equals the absorbed CPU form",
  opts,
  async () => {
    const ctx = await testContext();
    // 150 cached rows: several key tiles, the rope part of every key from the second buffer.
    const e = await mlaCase(ctx, { hh: 32, r: 512, dr: 64, dn: 128 }, 5, 150, 43);
    assertLess(e.out, 1e-5, `out ${e.out}`);
    assertLess(e.C, 1e-6);
    await checkLoops(ctx);
  },
);

Deno.test(
  "gated attention prefill at Qwen3.5's head size (d = 256, rotary 64, 4 query heads per KV head)",
  opts,
  async () => {
    const ctx = await testContext();
    // 150 cached rows: several key tiles per block, so the online rescaling is exercised.
    const e = await gatedCase(ctx, { hq: 8, hkv: 2, d: 256, rot: 64 }, 40, 150, [25, 15], 61);
    assertLess(e.out, 1e-5, `out ${e.out}`);
    assertLess(e.K, 1e-5, `K ${e.K}`);
    // Qwen3-Next: 8 query heads per KV head.
    const n = await gatedCase(ctx, { hq: 16, hkv: 2, d: 256, rot: 64 }, 20, 100, [20], 62);
    assertLess(n.out, 1e-5, `Qwen3-Next shape out ${n.out}`);
    await checkLoops(ctx);
  },
);

Deno.test(
  "attention prefill over an f16 KV cache (gated and MLA) equals the CPU path over f16-rounded rows",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(71);
    // The twin rounds the rows it appends to f16 as the kernels do (a rare f32 ulp apart can
    // round to the other neighbour: hence 1e-4 on the rows, not 0).
    for (const T of [1, 65, 130]) {
      const p0 = Math.floor(rand() * 40);
      for (const pieces of [[T], randomPieces(rand, T, 3)]) {
        const e = await gatedCase(
          ctx,
          { hq: 4, hkv: 2, d: 32, rot: 8 },
          T,
          p0,
          pieces,
          300 + T,
          undefined,
          true,
        );
        assertLess(e.out, 1e-4, `gated T=${T} p0=${p0} pieces=${pieces} out ${e.out}`);
        assertLess(e.K, 1e-4, `K ${e.K}`);
        assertLess(e.V, 1e-7, `V ${e.V}`);
      }
    }
    for (const [T, p0] of [[1, 0], [65, 10], [130, 3]]) {
      const e = await mlaCase(ctx, { hh: 4, r: 32, dr: 8, dn: 16 }, T, p0, 81 + T, true);
      assertLess(e.out, 1e-4, `MLA T=${T} p0=${p0} out ${e.out}`);
      assertLess(e.C, 1e-4, `C ${e.C}`);
      assertLess(e.KR, 1e-7, `KR ${e.KR}`);
    }
    await checkLoops(ctx);
  },
);

/** Every variant on every case when set (slow on a software GPU); otherwise a covering subset. */
const ALL = !!Deno.env.get("CAPSULE_ATTN_TEST_ALL");

Deno.test("every attention variant plans its own tiling on the test shapes (none falls back silently)", () => {
  const lim = { loopBudget: 60_000, maxWorkgroupStorage: 32768, maxBinding: 1 << 27 };
  const shape = { heads: 4, kvHeads: 2, qkDim: 64, valueDim: 64, values: {} as GPUBuffer };
  const seen = new Set<string>();
  for (const v of ATTN_VARIANT_NAMES) {
    const p = attentionPlan(lim, shape, v);
    const want = ATTN_VARIANTS[v];
    assertEquals(p.variant, v);
    assertEquals([p.TMS, p.TNS, p.OWX], [want.TMS, want.TNS, want.owx]);
    assertLess(p.WG, want.maxWG + 1);
    assertLess(p.RQ, want.maxRQ + 1);
    seen.add(`${p.RQ}/${p.WG}/${p.BKV}/${p.TMS}x${p.TNS}/${p.OWX}`);
  }
  assertEquals(seen.size, ATTN_VARIANT_NAMES.length, "the variants give distinct plans");
  // MLA's 512-wide values have no 128-invocation plan: those variants run base's plan.
  const mla = { heads: 32, kvHeads: 1, qkDim: 576, keyDim1: 512, valueDim: 512 };
  const h200 = { ...lim, maxWorkgroupStorage: 49152 };
  assertEquals(attentionPlan(h200, mla, "w128").variant, "base");
  assertEquals(attentionPlan(h200, mla, "base_w").variant, "base_w");
});

Deno.test(
  "every attention variant equals the CPU path: lengths 1–200, appends in pieces, GQA, both cache formats",
  opts,
  async () => {
    const ctx = await testContext();
    // d 64 so the warp-shaped O mapping and 128-key tiles are really taken at this size.
    const s = { hq: 4, hkv: 2, d: 64, rot: 16 };
    for (const [vi, v] of ATTN_VARIANT_NAMES.entries()) {
      const rand = rng(500 + vi);
      for (const [i, T] of [1, 63, 64, 65, 200].entries()) {
        const p0 = i === 0 ? 0 : Math.floor(rand() * 150);
        // One cache format per variant by default (pipelines compile slowly on lavapipe).
        for (const kv16 of ALL ? [false, true] : [vi % 2 === 1]) {
          for (const pieces of [[T], randomPieces(rand, T, 3)]) {
            const e = await gatedCase(ctx, s, T, p0, pieces, 700 + T, undefined, kv16, v);
            const at = `${v} T=${T} p0=${p0} pieces=${pieces} kv16=${kv16} (BKV ${e.plan!.BKV})`;
            assertEquals(e.plan!.variant, v);
            assertLess(e.out, kv16 ? 1e-4 : 1e-5, `${at}: out ${e.out}`);
            assertLess(e.K, kv16 ? 1e-4 : 1e-5, `${at}: K ${e.K}`);
          }
        }
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "every attention variant equals the CPU path on a ragged Qwen shape (3 heads per KV head, d 48; d 256 under CAPSULE_ATTN_TEST_ALL)",
  opts,
  async () => {
    const ctx = await testContext();
    const shapes: [GatedShape, number, number, number[]][] = [
      [{ hq: 6, hkv: 2, d: 48, rot: 16 }, 77, 131, [40, 37]],
      [{ hq: 8, hkv: 2, d: 256, rot: 64 }, 21, 150, [13, 8]],
      [{ hq: 16, hkv: 2, d: 256, rot: 64 }, 9, 70, [9]],
    ];
    for (const [vi, v] of ATTN_VARIANT_NAMES.entries()) {
      for (const [j, [s, T, p0, pieces]] of shapes.entries()) {
        // The d 256 shapes compile slowly on lavapipe: only with CAPSULE_ATTN_TEST_ALL.
        if (!ALL && j > 0) continue;
        for (const kv16 of ALL ? [false, true] : [vi % 2 === 0]) {
          const e = await gatedCase(ctx, s, T, p0, pieces, 900 + j, undefined, kv16, v);
          const p = e.plan!;
          const at = `${v} hq=${s.hq} d=${s.d} kv16=${kv16}: ${p.variant} RQ ${p.RQ} WG ${p.WG} BKV ${p.BKV}`;
          assertLess(e.out, kv16 ? 1e-4 : 1e-5, `${at}: out ${e.out}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);

Deno.test(
  "every attention variant equals the absorbed CPU form for MLA, both cache formats",
  opts,
  async () => {
    const ctx = await testContext();
    for (const v of ATTN_VARIANT_NAMES) {
      const cases = ALL ? [[1, 0], [65, 10], [130, 70]] : [[130, 70]];
      for (const [T, p0] of cases) {
        for (const f16 of ALL ? [false, true] : [ATTN_VARIANT_NAMES.indexOf(v) % 2 === 1]) {
          const e = await mlaCase(ctx, { hh: 4, r: 64, dr: 8, dn: 16 }, T, p0, 41 + T, f16, v);
          assertLess(e.out, f16 ? 1e-4 : 1e-5, `${v} T=${T} p0=${p0} kv16=${f16}: out ${e.out}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);
