/**
 * attention.wgsl (Qwen gated GQA) and mla.wgsl (Kimi MLA, absorbed form) — prep, the
 * context-split partials and the combine — against the CPU reference: `rmsNormRows`,
 * `applyRope`, `attendGqa` with the sigmoid gate, and the absorbed MLA of forward.ts. Contexts
 * from 1 row to several chunks, ragged head counts and dims, a stopped entry that must not
 * append.
 */
import { assert, assertEquals } from "@std/assert";
import { applyRope, attendGqa, rmsNormRows, ropeInvFreq, sigmoid, softmaxInPlace } from "../cpu/ops.ts";
import { parseModelConfig } from "../../model/config.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";
import { packMatrix, unpackMatrix } from "./pack.ts";
import {
  attentionDefines,
  attnChunks,
  attnGroupChunks,
  attnPartialGrid,
  attnRowsPerChunk,
  gatedDecodeSplit,
  geometry,
  mlaDecodeSplit,
  RPCMAX,
} from "./runtime.ts";

const gpu = await testGpu();

// Head sizes 20 (D/4 odd) and 40 (even) for the f16 cache.
for (const [kv16, headDim] of [[false, 20], [true, 20], [true, 40]] as const) {
  Deno.test({
    name:
      "gated GQA decode kernels (q/k norm, partial RoPE, append, split context, sigmoid gate) equal attendGqa" +
      (kv16 ? ` over an f16 KV cache, head size ${headDim}` : ""),
    ignore: !gpu,
    fn: async () => {
      const c = parseModelConfig({
        model_type: "qwen3_5_text",
        vocab_size: 64,
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: headDim,
        partial_rotary_factor: 0.4,
        intermediate_size: 32,
        linear_key_head_dim: 8,
        linear_value_head_dim: 16,
        linear_num_key_heads: 1,
        linear_num_value_heads: 1,
        layer_types: ["full_attention"],
        rope_parameters: { rope_theta: 10000, partial_rotary_factor: 0.4 },
        dtype: "bfloat16",
      });
      const a = c.attention;
      if (a.kind !== "gated") throw new Error("unreachable");
      const h = new Harness(gpu!);
      try {
        const r = rng(21);
        const g = geometry(c), d = attentionDefines(c, 8, kv16);
        const hq = a.numHeads, hkv = a.numKvHeads, D = a.headDim, row = hkv * D;
        const slots = [1, 0, 2], positions = [0, 129, 300], done = [0, 0, 1];
        // Room for every position plus the appended row, in whole RPCMAX blocks as the runtime makes.
        const cap = Math.ceil((Math.max(...positions) + 1) / RPCMAX) * RPCMAX, nc = attnGroupChunks(cap);
        const B = slots.length, mb = 8;
        const proj = randArray(r, mb * g.PS, -1, 1);
        const K = randArray(r, 3 * cap * row, -1, 1), V = randArray(r, 3 * cap * row, -1, 1);
        // An f16 cache holds f16 values: the reference starts from the same (rounded) rows.
        if (kv16) { for (const x of [K, V]) x.set(new Float16Array(x)); }
        const dev = (x: Float32Array) => (kv16 ? new Float16Array(x) : x);
        const qNorm = randArray(r, D, 0.5, 1.5), kNorm = randArray(r, D, 0.5, 1.5);
        const invFreq = ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16);
        const headers = [{}, {}, {}] as Record<string, number>[];
        slots.forEach((s, b) => headers[s] = { POS: positions[b], DONE: done[b] });
        const step = h.stepTable(slots, mb, [0, 1, 2]);
        const slotBuf = h.slots(headers);
        const grp = h.uniform(new Uint32Array([0, cap, nc, 0]));
        const projBuf = h.buffer(proj),
          qBuf = h.buffer(mb * hq * D * 4),
          kBuf = h.buffer(dev(K)),
          vBuf = h.buffer(dev(V));
        const po = h.buffer(mb * hq * nc * D * 4),
          pml = h.buffer(mb * hq * nc * 8),
          out = h.buffer(mb * g.attOut * 4);
        h.run("attention.wgsl", d.prep, "rrurrrwww", [
          step,
          slotBuf,
          grp,
          projBuf,
          h.buffer(new Float32Array([...qNorm, ...kNorm])),
          h.buffer(invFreq),
          qBuf,
          kBuf,
          vBuf,
        ], [hq + hkv, B]);
        h.run("attention.wgsl", d.partial, "rrurrrww", [step, slotBuf, grp, qBuf, kBuf, vBuf, po, pml], [
          ...attnPartialGrid(a, nc),
          B,
        ]);
        h.run("attention.wgsl", d.combine, "rrurrrw", [step, slotBuf, grp, projBuf, po, pml, out], [
          gatedDecodeSplit(a).combineX,
          B,
        ]);
        const gotOut = await h.f32(out, mb * g.attOut),
          gotK = await (kv16 ? h.f16(kBuf, K.length) : h.f32(kBuf, K.length)),
          gotV = await (kv16 ? h.f16(vBuf, V.length) : h.f32(vBuf, V.length));
        for (let b = 0; b < B; b++) {
          const pos = positions[b], local = b;
          const pr = proj.subarray(b * g.PS);
          const q = new Float32Array(hq * D), gate = new Float32Array(hq * D);
          for (let hh = 0; hh < hq; hh++) {
            q.set(pr.subarray(hh * 2 * D, hh * 2 * D + D), hh * D);
            gate.set(pr.subarray(hh * 2 * D + D, hh * 2 * D + 2 * D), hh * D);
          }
          rmsNormRows(q, qNorm, c.rmsNormEps);
          applyRope(q, D, a.rotaryDim, invFreq, pos);
          const k = rmsNormRows(pr.slice(hq * 2 * D, hq * 2 * D + row), kNorm, c.rmsNormEps);
          applyRope(k, D, a.rotaryDim, invFreq, pos);
          const v = pr.slice(hq * 2 * D + row, hq * 2 * D + 2 * row);
          const keys = K.slice(local * cap * row, (local * cap + pos + 1) * row),
            values = V.slice(local * cap * row, (local * cap + pos + 1) * row);
          const at = (local * cap + pos) * row;
          // A stopped entry appends nothing and attends over the cache as it is. Over an f16 cache
          // the reference attends over the rows the kernel rounded (checked against k and v below).
          if (!done[b]) {
            keys.set(kv16 ? gotK.subarray(at, at + row) : k, pos * row);
            values.set(kv16 ? gotV.subarray(at, at + row) : v, pos * row);
          }
          const want = attendGqa(q, keys, values, pos + 1, hq, hkv, D, 1 / Math.sqrt(D)).map((o, j) =>
            o * sigmoid(gate[j])
          );
          const e = maxRelDiff(gotOut.subarray(b * g.attOut, b * g.attOut + hq * D), want);
          assert(e < 1e-4, `entry ${b} (position ${pos}): attention output differs by ${e}`);
          if (done[b]) {
            assertEquals(
              Array.from(gotK.subarray(at, at + row)),
              Array.from(K.subarray(at, at + row)),
              "a stopped entry appended a key",
            );
          } else if (kv16) {
            // Rounded to f16: within half an f16 ulp (2^-11 relative) of the f32 values, give or take.
            assert(maxRelDiff(gotK.subarray(at, at + row), k) < 1e-3, `entry ${b}: appended key differs`);
            assert(maxRelDiff(gotV.subarray(at, at + row), v) < 1e-3, `entry ${b}: appended value differs`);
          } else {
            assert(maxRelDiff(gotK.subarray(at, at + row), k) < 1e-5, `entry ${b}: appended key differs`);
            assertEquals(
              Array.from(gotV.subarray(at, at + row)),
              Array.from(v),
              `entry ${b}: appended value differs`,
            );
          }
        }
      } finally {
        h.dispose();
      }
    },
  });
}

/** Shape of an MLA decode case: heads, latent rank R, rope DR, nope DN, value DV. */
interface MlaShape {
  hh: number;
  R: number;
  dr: number;
  dn: number;
  dv: number;
}

/**
 * Runs the three MLA decode kernels (prep, partial, combine) for one ragged batch — entry b at
 * KV-group slot `locals[b]` with its new token at `positions[b]`, stopped where `done[b]` — and
 * checks the appended rows and every head's output against a float64 CPU MLA in the absorbed form
 * (q̃ = W_kᵀ q_nope, softmax(q̃·c + q_r·kr), W_v Σ p c).
 */
async function checkMlaDecode(
  shape: MlaShape,
  positions: number[],
  done: number[],
  kv16: boolean,
  seed: number,
): Promise<void> {
  const { hh, R, dr, dn, dv } = shape;
  const c = mlaConfig(hh, R, dr, dn, dv);
  const a = c.attention;
  if (a.kind !== "mla") throw new Error("unreachable");
  const h = new Harness(gpu!);
  try {
    const rr = rng(seed);
    const g = geometry(c), d = attentionDefines(c, 8, kv16), sp = mlaDecodeSplit(a);
    const B = positions.length, mb = 8;
    const cap = Math.ceil((Math.max(...positions) + 1) / RPCMAX) * RPCMAX, nc = attnGroupChunks(cap);
    const locals = positions.map((_, b) => B - 1 - b); // slots in reverse batch order
    const proj = randArray(rr, mb * g.PS, -1, 1);
    const Kc = randArray(rr, B * cap * R, -1, 1), Vr = randArray(rr, B * cap * dr, -1, 1);
    // An f16 cache holds f16 values: the reference starts from the same (rounded) rows.
    if (kv16) { for (const x of [Kc, Vr]) x.set(new Float16Array(x)); }
    const dev = (x: Float32Array) => (kv16 ? new Float16Array(x) : x);
    const kvNorm = randArray(rr, R, 0.5, 1.5);
    const kvB = packMatrix({
      rows: hh * (dn + dv),
      cols: R,
      data: randArray(rr, hh * (dn + dv) * R, -0.4, 0.4),
    }, "f16");
    const W = unpackMatrix(kvB);
    const step = h.stepTable(positions.map((_, b) => b), mb, locals);
    const slotBuf = h.slots(positions.map((p, b) => ({ POS: p, DONE: done[b] })));
    const grp = h.uniform(new Uint32Array([0, cap, nc, 0]));
    const projBuf = h.buffer(proj), wBuf = h.buffer(kvB.data), qabs = h.buffer(mb * hh * (R + dr) * 4);
    const kBuf = h.buffer(dev(Kc)), vBuf = h.buffer(dev(Vr));
    const pctx = h.buffer(mb * hh * nc * R * 4),
      pml = h.buffer(mb * hh * nc * 8),
      out = h.buffer(mb * g.attOut * 4);
    h.run("mla.wgsl", d.prep, "rrurrrwww", [
      step,
      slotBuf,
      grp,
      projBuf,
      wBuf,
      h.buffer(kvNorm),
      qabs,
      kBuf,
      vBuf,
    ], [sp.prepX, B]);
    h.run("mla.wgsl", d.partial, "rrurrrww", [step, slotBuf, grp, qabs, kBuf, vBuf, pctx, pml], [
      ...attnPartialGrid(c.attention, nc),
      B,
    ]);
    h.run("mla.wgsl", d.combine, "rrurrrw", [step, slotBuf, grp, wBuf, pctx, pml, out], [sp.combineX, B]);
    const got = await h.f32(out, mb * g.attOut);
    const gotQ = await h.f32(qabs, mb * hh * (R + dr));
    const gotK = await (kv16 ? h.f16(kBuf, Kc.length) : h.f32(kBuf, Kc.length));
    const gotV = await (kv16 ? h.f16(vBuf, Vr.length) : h.f32(vBuf, Vr.length));
    const qRows = hh * (dn + dr);
    for (let b = 0; b < B; b++) {
      const pos = positions[b], n = pos + 1, lb = locals[b];
      const pr = proj.subarray(b * g.PS);
      const cNew = rmsNormRows(pr.slice(qRows, qRows + R), kvNorm, a.kvNormEps);
      const cs = Kc.slice(lb * cap * R, (lb * cap + n) * R),
        krs = Vr.slice(lb * cap * dr, (lb * cap + n) * dr);
      const krNew = pr.subarray(qRows + R, qRows + R + dr);
      const gotC = gotK.subarray((lb * cap + pos) * R, (lb * cap + pos + 1) * R);
      const gotKr = gotV.subarray((lb * cap + pos) * dr, (lb * cap + pos + 1) * dr);
      if (done[b]) {
        // A stopped entry appends nothing and attends over the cache as it is.
        assertEquals(
          Array.from(gotC),
          Array.from(cs.subarray(pos * R)),
          `entry ${b}: a stopped entry appended`,
        );
        assertEquals(
          Array.from(gotKr),
          Array.from(krs.subarray(pos * dr)),
          `entry ${b}: a stopped entry appended`,
        );
      } else {
        // Over an f16 cache the reference attends over the rows the kernel rounded: within half an
        // f16 ulp (2^-11 relative) of the f32 values, give or take.
        cs.set(kv16 ? gotC : cNew, pos * R);
        krs.set(kv16 ? gotKr : krNew, pos * dr);
        assert(maxRelDiff(gotC, cNew) < (kv16 ? 1e-3 : 1e-5), `entry ${b}: latent row differs`);
        assert(maxRelDiff(gotKr, krNew) <= (kv16 ? 1e-3 : 0), `entry ${b}: rope-key row differs`);
      }
      for (let h0 = 0; h0 < hh; h0++) {
        const qb = h0 * (dn + dr);
        const qc = new Float64Array(R);
        for (let i = 0; i < dn; i++) {
          for (let j = 0; j < R; j++) qc[j] += pr[qb + i] * W.data[(h0 * (dn + dv) + i) * R + j];
        }
        // The absorbed query itself: every column block and the rope tail.
        const qa = gotQ.subarray((b * hh + h0) * (R + dr), (b * hh + h0 + 1) * (R + dr));
        const eq = maxRelDiff(qa, [...qc, ...pr.subarray(qb + dn, qb + dn + dr)]);
        assert(eq < 1e-5, `entry ${b} head ${h0}: absorbed query differs by ${eq}`);
        const p = new Float64Array(n);
        for (let m = 0; m < n; m++) {
          let sc = 0;
          for (let j = 0; j < R; j++) sc += qc[j] * cs[m * R + j];
          for (let j = 0; j < dr; j++) sc += pr[qb + dn + j] * krs[m * dr + j];
          p[m] = sc / Math.sqrt(dn + dr);
        }
        softmaxInPlace(p, n);
        const ctx = new Float64Array(R);
        for (let m = 0; m < n; m++) for (let j = 0; j < R; j++) ctx[j] += p[m] * cs[m * R + j];
        const want = new Float32Array(dv);
        for (let i = 0; i < dv; i++) {
          let o = 0;
          for (let j = 0; j < R; j++) o += W.data[(h0 * (dn + dv) + dn + i) * R + j] * ctx[j];
          want[i] = o;
        }
        const e = maxRelDiff(got.subarray(b * g.attOut + h0 * dv, b * g.attOut + (h0 + 1) * dv), want);
        assert(
          e < 1e-4,
          `R ${R} DN ${dn} DV ${dv}, entry ${b} head ${h0} (position ${pos}): MLA output differs by ${e}`,
        );
      }
    }
  } finally {
    h.dispose();
  }
}

for (const kv16 of [false, true]) {
  Deno.test({
    name:
      "MLA decode kernels (absorbed query, latent norm and append, split context, up-projection) equal the CPU MLA" +
      (kv16 ? " over an f16 KV cache" : ""),
    ignore: !gpu,
    fn: () => checkMlaDecode({ hh: 3, R: 24, dr: 8, dn: 12, dv: 20 }, [0, 200], [0, 0], kv16, 22),
  });
}

Deno.test({
  name: "MLA decode prep and combine equal the CPU MLA on shapes with partial column and output blocks, " +
    "ragged row groups, a latent wider than a workgroup and two head blocks",
  ignore: !gpu,
  fn: async () => {
    const shapes: MlaShape[] = [
      // R/8 = 25 words: 4 column blocks of 8, the last one word; DN = 100 leaves the row groups
      // 3 or 4 rows (the unrolled step and its remainder); DV = 40: a full output block of 32 and
      // one of 8; R/4 = 50 columns, so 5 merge slices and 6 idle threads.
      { hh: 3, R: 200, dr: 12, dn: 100, dv: 40 },
      // R/4 = 272 > 256 threads: one merge slice, threads looping over two columns; 17 column blocks.
      { hh: 2, R: 1088, dr: 4, dn: 20, dv: 24 },
      // 12 heads: two partial head blocks (8 and 4) per chunk, side by side in the grid.
      { hh: 12, R: 24, dr: 8, dn: 12, dv: 20 },
    ];
    // Contexts on the chunk sizes of 16 and 32 rows and their edges; entry 2 is stopped.
    const positions = [0, 16, 300, 1100], done = [0, 0, 1, 0];
    for (const [i, s] of shapes.entries()) {
      for (const kv16 of [false, true]) {
        await checkMlaDecode(s, positions, done, kv16, 50 + 2 * i + Number(kv16));
      }
    }
  },
});

Deno.test({
  name: "partial RoPE kernel equals applyRope at positions up to 262,143",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(23);
      for (const [D, ROT, theta] of [[256, 64, 1e7], [20, 8, 1e4]] as const) {
        const invFreq = ropeInvFreq(ROT, theta, true);
        const positions = [0, 1, 7, 1000, 32767, 100003, 262143];
        const x = randArray(r, positions.length * D, -2, 2);
        const buf = h.buffer(x);
        h.run("rope.wgsl", { D, ROT, STANDALONE: 1 }, "rrw", [
          h.buffer(new Uint32Array(positions)),
          h.buffer(invFreq),
          buf,
        ], [positions.length]);
        const got = await h.f32(buf, x.length);
        positions.forEach((p, i) => {
          const want = x.slice(i * D, (i + 1) * D);
          applyRope(want, D, ROT, invFreq, p);
          let worst = 0;
          for (let j = 0; j < D; j++) worst = Math.max(worst, Math.abs(got[i * D + j] - want[j]));
          assert(worst < 2e-5, `D=${D} position ${p}: |difference| ${worst}`);
        });
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test("attention chunks depend on the session's context only, and a group has enough for any context it holds", () => {
  const rpc = [1, 15, 16, 17, 100, 1000, 1024, 1025, 2048, 2049, 5000, 8192, 8193, 32768].map(
    attnRowsPerChunk,
  );
  assertEquals(rpc, [16, 16, 16, 16, 16, 16, 16, 32, 32, 64, 128, 128, 128, 128]);
  for (let n = 1; n <= 8192; n++) assert(attnChunks(n) <= 64, `n=${n}: ${attnChunks(n)} chunks`);
  assertEquals(attnChunks(32768), 256);
  // attnGroupChunks(cap) is exactly the most any context n ≤ cap needs (caps are multiples of RPCMAX).
  let most = 0, n = 0;
  for (let cap = RPCMAX; cap <= 160 * RPCMAX; cap += RPCMAX) {
    while (n < cap) most = Math.max(most, attnChunks(++n));
    assertEquals(attnGroupChunks(cap), most, `cap ${cap}`);
  }
});

/** One session of a split-context test: its context length and its own rows of everything. */
interface CtxSession {
  n: number;
  /** gated: q [HQ·D] | MLA: absorbed query [HH·(R + DR)] */
  q: Float32Array;
  /** gated: K rows [n, HKV·D] | MLA: latent rows [n, R] */
  keys: Float32Array;
  /** gated: V rows [n, HKV·D] | MLA: rope-key rows [n, DR] */
  values: Float32Array;
  /** gated: the projection row (its gate halves are read) */
  proj?: Float32Array;
}

/**
 * Runs the partial and combine passes of `file` for `sessions` placed at slots `locals` of one KV
 * group of capacity `cap` (its chunk count from attnGroupChunks), and returns each session's output.
 * `loadsInFlight` overrides the partial's unroll depth (ATTN_LOADS_IN_FLIGHT).
 */
async function runSplitContext(
  h: Harness,
  file: "attention.wgsl" | "mla.wgsl",
  c: ReturnType<typeof parseModelConfig>,
  cap: number,
  sessions: CtxSession[],
  locals: number[],
  wkvb?: GPUBuffer,
  kv16 = false,
  loadsInFlight?: number,
): Promise<Float32Array[]> {
  const a = c.attention, g = geometry(c), d = attentionDefines(c, 8, kv16), mb = 8;
  if (loadsInFlight !== undefined) d.partial.LIF = loadsInFlight;
  const B = sessions.length, nslots = Math.max(...locals) + 1, nc = attnGroupChunks(cap);
  const gated = a.kind === "gated";
  const heads = a.numHeads;
  const qw = gated ? a.headDim : a.kvLoraRank + a.qkRopeHeadDim;
  const krow = gated ? a.numKvHeads * a.headDim : a.kvLoraRank;
  const vrow = gated ? a.numKvHeads * a.headDim : a.qkRopeHeadDim;
  const width = gated ? a.headDim : a.kvLoraRank;
  const K = new Float32Array(nslots * cap * krow), V = new Float32Array(nslots * cap * vrow);
  const q = new Float32Array(mb * heads * qw), proj = new Float32Array(mb * g.PS);
  sessions.forEach((s, b) => {
    assert(s.n <= cap);
    K.set(s.keys, locals[b] * cap * krow);
    V.set(s.values, locals[b] * cap * vrow);
    q.set(s.q, b * heads * qw);
    if (s.proj) proj.set(s.proj, b * g.PS);
  });
  const step = h.stepTable(sessions.map((_, b) => b), mb, locals);
  const slotBuf = h.slots(sessions.map((s) => ({ POS: s.n - 1 })));
  const grp = h.uniform(new Uint32Array([0, cap, nc, 0]));
  const po = h.buffer(mb * heads * nc * width * 4), pml = h.buffer(mb * heads * nc * 8);
  const out = h.buffer(mb * g.attOut * 4);
  const head = [step, slotBuf, grp];
  // An f16 cache: the callers' rows are f16-representable, so the reference sees the same values.
  const kv = (x: Float32Array) => h.buffer(kv16 ? new Float16Array(x) : x);
  h.run(file, d.partial, "rrurrrww", [...head, h.buffer(q), kv(K), kv(V), po, pml], [
    ...attnPartialGrid(a, nc),
    B,
  ]);
  h.run(file, d.combine, "rrurrrw", [...head, gated ? h.buffer(proj) : wkvb!, po, pml, out], [
    a.kind === "gated" ? gatedDecodeSplit(a).combineX : mlaDecodeSplit(a).combineX,
    B,
  ]);
  const got = await h.f32(out, mb * g.attOut);
  const per = gated ? heads * a.headDim : heads * a.vHeadDim;
  return sessions.map((_, b) => got.slice(b * g.attOut, b * g.attOut + per));
}

function gatedConfig(heads: number, kvHeads: number, headDim: number) {
  return parseModelConfig({
    model_type: "qwen3_5_text",
    vocab_size: 64,
    hidden_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    intermediate_size: 32,
    linear_key_head_dim: 8,
    linear_value_head_dim: 16,
    linear_num_key_heads: 1,
    linear_num_value_heads: 1,
    layer_types: ["full_attention"],
    rope_parameters: { rope_theta: 10000, partial_rotary_factor: 0.5 },
    dtype: "bfloat16",
  });
}

function mlaConfig(heads: number, rank: number, rope: number, nope: number, v: number) {
  return parseModelConfig({
    model_type: "kimi_linear",
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 32,
    moe_intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: heads,
    kv_lora_rank: rank,
    qk_nope_head_dim: nope,
    qk_rope_head_dim: rope,
    v_head_dim: v,
    mla_use_nope: true,
    num_experts: 2,
    num_experts_per_token: 1,
    first_k_dense_replace: 1,
    linear_attn_config: { head_dim: 16, num_heads: 1, kda_layers: [], full_attn_layers: [1] },
  });
}

function gatedSession(r: () => number, c: ReturnType<typeof parseModelConfig>, n: number): CtxSession {
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("unreachable");
  const row = a.numKvHeads * a.headDim;
  return {
    n,
    q: randArray(r, a.numHeads * a.headDim, -2, 2),
    keys: randArray(r, n * row, -1, 1),
    values: randArray(r, n * row, -1, 1),
    proj: randArray(r, geometry(c).PS, -1, 1),
  };
}

function gatedReference(c: ReturnType<typeof parseModelConfig>, s: CtxSession): Float32Array {
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("unreachable");
  const D = a.headDim;
  return attendGqa(s.q, s.keys, s.values, s.n, a.numHeads, a.numKvHeads, D, 1 / Math.sqrt(D)).map((o, j) => {
    const hh = Math.floor(j / D);
    return o * sigmoid(s.proj![hh * 2 * D + D + (j % D)]);
  });
}

function mlaSession(r: () => number, c: ReturnType<typeof parseModelConfig>, n: number): CtxSession {
  const a = c.attention;
  if (a.kind !== "mla") throw new Error("unreachable");
  return {
    n,
    q: randArray(r, a.numHeads * (a.kvLoraRank + a.qkRopeHeadDim), -0.5, 0.5),
    keys: randArray(r, n * a.kvLoraRank, -1, 1),
    values: randArray(r, n * a.qkRopeHeadDim, -1, 1),
  };
}

/** Absorbed MLA from the absorbed query: softmax(q̃·c + q_r·kr) over the rows, then W_v Σ p c. */
function mlaReference(c: ReturnType<typeof parseModelConfig>, W: Float32Array, s: CtxSession): Float32Array {
  const a = c.attention;
  if (a.kind !== "mla") throw new Error("unreachable");
  const R = a.kvLoraRank, dr = a.qkRopeHeadDim, dn = a.qkNopeHeadDim, dv = a.vHeadDim, n = s.n;
  const out = new Float32Array(a.numHeads * dv);
  for (let h0 = 0; h0 < a.numHeads; h0++) {
    const qb = h0 * (R + dr);
    const p = new Float64Array(n);
    for (let m = 0; m < n; m++) {
      let sc = 0;
      for (let j = 0; j < R; j++) sc += s.q[qb + j] * s.keys[m * R + j];
      for (let j = 0; j < dr; j++) sc += s.q[qb + R + j] * s.values[m * dr + j];
      p[m] = sc / Math.sqrt(dn + dr);
    }
    softmaxInPlace(p, n);
    const ctx = new Float64Array(R);
    for (let m = 0; m < n; m++) for (let j = 0; j < R; j++) ctx[j] += p[m] * s.keys[m * R + j];
    for (let i = 0; i < dv; i++) {
      let o = 0;
      for (let j = 0; j < R; j++) o += W[(h0 * (dn + dv) + dn + i) * R + j] * ctx[j];
      out[h0 * dv + i] = o;
    }
  }
  return out;
}

// Contexts on every chunk size (16, 32 and 128 rows) and its edges, all in one ragged batch.
const CONTEXTS = [1, 15, 16, 17, 100, 1000, 1025, 5000];

Deno.test({
  name:
    "gated split-context attention equals attendGqa for contexts on every chunk size, in one ragged batch",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(31);
      // D/4 = 64 < the partial workgroup (value rows split over threads), and D/4 = 128 (one
      // column per thread) with G = 4; odd G = 3 with D/4 = 5. D/4 = 12 splits the combine into a
      // full and a partial column block, and 33,000 rows (258 chunks) take every combine slice
      // through its eight-chunk steps and remainders; 1,100 and 5,000 leave some slices idle.
      for (
        const [hq, hkv, D, ns] of [
          [8, 2, 256, CONTEXTS],
          [4, 1, 512, [1, 17, 1025]],
          [6, 2, 20, [3, 40, 2100]],
          [3, 1, 48, [7, 1100, 5000, 33000]],
        ] as const
      ) {
        const c = gatedConfig(hq, hkv, D);
        const sessions = ns.map((n) => gatedSession(r, c, n));
        const cap = Math.ceil(Math.max(...ns) / RPCMAX) * RPCMAX;
        // The f32 cache, then an f16 one over the same rows rounded to f16.
        for (const kv16 of [false, true]) {
          if (kv16) {
            for (const s of sessions) for (const x of [s.keys, s.values]) x.set(new Float16Array(x));
          }
          const got = await runSplitContext(
            h,
            "attention.wgsl",
            c,
            cap,
            sessions,
            ns.map((_, i) => ns.length - 1 - i),
            undefined,
            kv16,
          );
          sessions.forEach((s, b) => {
            const e = maxRelDiff(got[b], gatedReference(c, s));
            assert(
              e < 1e-4,
              `HQ ${hq} D ${D}, context ${s.n}, f16 ${kv16}: attention output differs by ${e}`,
            );
          });
        }
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name:
    "MLA split-context attention equals the absorbed CPU MLA for contexts on every chunk size, in one ragged batch",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(32);
      // Kimi's latent width (R/4 = 128, one column per thread) and a small one (rows split).
      for (
        const [hh, R, dr, dn, dv, ns] of [[8, 512, 64, 128, 32, CONTEXTS], [3, 24, 8, 12, 20, [
          2,
          17,
          300,
          1030,
        ]]] as const
      ) {
        const c = mlaConfig(hh, R, dr, dn, dv);
        const kvB = packMatrix({
          rows: hh * (dn + dv),
          cols: R,
          data: randArray(r, hh * (dn + dv) * R, -0.2, 0.2),
        }, "f16");
        const W = unpackMatrix(kvB).data;
        const sessions = ns.map((n) => mlaSession(r, c, n));
        const cap = Math.ceil(Math.max(...ns) / RPCMAX) * RPCMAX;
        const got = await runSplitContext(
          h,
          "mla.wgsl",
          c,
          cap,
          sessions,
          ns.map((_, i) => i),
          h.buffer(kvB.data),
        );
        sessions.forEach((s, b) => {
          const e = maxRelDiff(got[b], mlaReference(c, W, s));
          assert(e < 1e-4, `HH ${hh} R ${R}, context ${s.n}: MLA output differs by ${e}`);
        });
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name:
    "a session's attention output is bit-identical alone in a small group and among others in a large one",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(33);
      const gc = gatedConfig(8, 2, 256), mc = mlaConfig(8, 512, 64, 128, 32);
      const mc2 = mc.attention;
      if (mc2.kind !== "mla") throw new Error("unreachable");
      const kvB = packMatrix({
        rows: 8 * (mc2.qkNopeHeadDim + mc2.vHeadDim),
        cols: 512,
        data: randArray(r, 8 * (mc2.qkNopeHeadDim + mc2.vHeadDim) * 512, -0.2, 0.2),
      }, "f16");
      const wkvb = h.buffer(kvB.data);
      for (
        const [file, c, make] of [["attention.wgsl", gc, gatedSession], ["mla.wgsl", mc, mlaSession]] as const
      ) {
        for (const n of [17, 1000, 3000]) {
          const s = make(r, c, n);
          const others = [5, 9000, 640].map((m) => make(r, c, m));
          const small = Math.ceil(n / RPCMAX) * RPCMAX, large = 9088;
          assert(attnGroupChunks(small) !== attnGroupChunks(large));
          const [alone] = await runSplitContext(h, file, c, small, [s], [0], wkvb);
          const mixed = await runSplitContext(h, file, c, large, [others[0], others[1], s, others[2]], [
            1,
            0,
            3,
            2,
          ], wkvb);
          assertEquals(
            new Uint32Array(mixed[2].buffer),
            new Uint32Array(alone.buffer),
            `${file}, context ${n}: the output depends on the group or the batch`,
          );
        }
      }
    } finally {
      h.dispose();
    }
  },
});

Deno.test({
  name: "split-context partials give the same bits with 4 or 16 cache loads in flight (gated and MLA)",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(34);
      const gc = gatedConfig(8, 2, 256), mc = mlaConfig(8, 512, 64, 128, 32);
      const ns = [1, 17, 300, 1030, 5000];
      const cap = Math.ceil(Math.max(...ns) / RPCMAX) * RPCMAX;
      const locals = ns.map((_, i) => i);
      const kvB = packMatrix(
        { rows: 8 * 160, cols: 512, data: randArray(r, 8 * 160 * 512, -0.2, 0.2) },
        "f16",
      );
      const w = h.buffer(kvB.data);
      const gs = ns.map((n) => gatedSession(r, gc, n)), ms = ns.map((n) => mlaSession(r, mc, n));
      const bits = (x: Float32Array[]) => x.map((v) => [...new Uint32Array(v.slice().buffer)]);
      for (const kv16 of [false, true]) {
        if (kv16) { for (const s of gs) for (const x of [s.keys, s.values]) x.set(new Float16Array(x)); }
        const four = await runSplitContext(h, "attention.wgsl", gc, cap, gs, locals, undefined, kv16, 4);
        const sixteen = await runSplitContext(h, "attention.wgsl", gc, cap, gs, locals, undefined, kv16, 16);
        assertEquals(bits(sixteen), bits(four), `gated, f16 cache ${kv16}`);
      }
      const four = await runSplitContext(h, "mla.wgsl", mc, cap, ms, locals, w, false, 4);
      const sixteen = await runSplitContext(h, "mla.wgsl", mc, cap, ms, locals, w, false, 16);
      assertEquals(bits(sixteen), bits(four), "MLA");
    } finally {
      h.dispose();
    }
  },
});
