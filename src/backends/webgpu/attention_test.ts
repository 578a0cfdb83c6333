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
import { attentionDefines, geometry, RPCMAX } from "./runtime.ts";

const gpu = await testGpu();

Deno.test({
  name:
    "gated GQA decode kernels (q/k norm, partial RoPE, append, split context, sigmoid gate) equal attendGqa",
  ignore: !gpu,
  fn: async () => {
    const c = parseModelConfig({
      model_type: "qwen3_5_text",
      vocab_size: 64,
      hidden_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 6,
      num_key_value_heads: 2,
      head_dim: 20,
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
      const g = geometry(c), d = attentionDefines(c, 8);
      const hq = a.numHeads, hkv = a.numKvHeads, D = a.headDim, row = hkv * D;
      const cap = 3 * RPCMAX, nc = Math.ceil(cap / RPCMAX);
      const slots = [1, 0, 2], positions = [0, 129, 300], done = [0, 0, 1];
      const B = slots.length, mb = 8;
      const proj = randArray(r, mb * g.PS, -1, 1);
      const K = randArray(r, 3 * cap * row, -1, 1), V = randArray(r, 3 * cap * row, -1, 1);
      const qNorm = randArray(r, D, 0.5, 1.5), kNorm = randArray(r, D, 0.5, 1.5);
      const invFreq = ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16);
      const headers = [{}, {}, {}] as Record<string, number>[];
      slots.forEach((s, b) => headers[s] = { POS: positions[b], DONE: done[b] });
      const step = h.stepTable(slots, mb, [0, 1, 2]);
      const slotBuf = h.slots(headers);
      const grp = h.uniform(new Uint32Array([0, cap, nc, 0]));
      const projBuf = h.buffer(proj),
        qBuf = h.buffer(mb * hq * D * 4),
        kBuf = h.buffer(K),
        vBuf = h.buffer(V);
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
        nc,
        hkv,
        B,
      ]);
      h.run("attention.wgsl", d.combine, "rrurrrw", [step, slotBuf, grp, projBuf, po, pml, out], [hq, B]);
      const gotOut = await h.f32(out, mb * g.attOut),
        gotK = await h.f32(kBuf, K.length),
        gotV = await h.f32(vBuf, V.length);
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
        // A stopped entry appends nothing and attends over the cache as it is.
        if (!done[b]) {
          keys.set(k, pos * row);
          values.set(v, pos * row);
        }
        const want = attendGqa(q, keys, values, pos + 1, hq, hkv, D, 1 / Math.sqrt(D)).map((o, j) =>
          o * sigmoid(gate[j])
        );
        const e = maxRelDiff(gotOut.subarray(b * g.attOut, b * g.attOut + hq * D), want);
        assert(e < 1e-4, `entry ${b} (position ${pos}): attention output differs by ${e}`);
        const at = (local * cap + pos) * row;
        if (done[b]) {
          assertEquals(
            Array.from(gotK.subarray(at, at + row)),
            Array.from(K.subarray(at, at + row)),
            "a stopped entry appended a key",
          );
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

Deno.test({
  name:
    "MLA decode kernels (absorbed query, latent norm and append, split context, up-projection) equal the CPU MLA",
  ignore: !gpu,
  fn: async () => {
    const c = parseModelConfig({
      model_type: "kimi_linear",
      vocab_size: 64,
      hidden_size: 32,
      intermediate_size: 32,
      moe_intermediate_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 3,
      kv_lora_rank: 24,
      qk_nope_head_dim: 12,
      qk_rope_head_dim: 8,
      v_head_dim: 20,
      mla_use_nope: true,
      num_experts: 2,
      num_experts_per_token: 1,
      first_k_dense_replace: 1,
      linear_attn_config: { head_dim: 16, num_heads: 1, kda_layers: [], full_attn_layers: [1] },
    });
    const a = c.attention;
    if (a.kind !== "mla") throw new Error("unreachable");
    const h = new Harness(gpu!);
    try {
      const rr = rng(22);
      const g = geometry(c), d = attentionDefines(c, 8);
      const hh = a.numHeads, dn = a.qkNopeHeadDim, dr = a.qkRopeHeadDim, dv = a.vHeadDim, R = a.kvLoraRank;
      const cap = 2 * RPCMAX, nc = Math.ceil(cap / RPCMAX);
      const slots = [0, 1], positions = [0, 200], B = 2, mb = 8;
      const proj = randArray(rr, mb * g.PS, -1, 1);
      const Kc = randArray(rr, 2 * cap * R, -1, 1), Vr = randArray(rr, 2 * cap * dr, -1, 1);
      const kvNorm = randArray(rr, R, 0.5, 1.5);
      const kvB = packMatrix({
        rows: hh * (dn + dv),
        cols: R,
        data: randArray(rr, hh * (dn + dv) * R, -0.4, 0.4),
      }, "f16");
      const W = unpackMatrix(kvB);
      const step = h.stepTable(slots, mb, [0, 1]);
      const slotBuf = h.slots(positions.map((p) => ({ POS: p })));
      const grp = h.uniform(new Uint32Array([0, cap, nc, 0]));
      const projBuf = h.buffer(proj), wBuf = h.buffer(kvB.data), qabs = h.buffer(mb * hh * (R + dr) * 4);
      const kBuf = h.buffer(Kc), vBuf = h.buffer(Vr);
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
      ], [hh + 1, B]);
      h.run("mla.wgsl", d.partial, "rrurrrww", [step, slotBuf, grp, qabs, kBuf, vBuf, pctx, pml], [
        nc,
        Math.ceil(hh / Math.min(8, hh)),
        B,
      ]);
      h.run("mla.wgsl", d.combine, "rrurrrw", [step, slotBuf, grp, wBuf, pctx, pml, out], [hh, B]);
      const got = await h.f32(out, mb * g.attOut), gotK = await h.f32(kBuf, Kc.length);
      const qRows = hh * (dn + dr);
      for (let b = 0; b < B; b++) {
        const pos = positions[b], n = pos + 1;
        const pr = proj.subarray(b * g.PS);
        const cNew = rmsNormRows(pr.slice(qRows, qRows + R), kvNorm, a.kvNormEps);
        const cs = Kc.slice(b * cap * R, (b * cap + n) * R), krs = Vr.slice(b * cap * dr, (b * cap + n) * dr);
        cs.set(cNew, pos * R);
        krs.set(pr.subarray(qRows + R, qRows + R + dr), pos * dr);
        assert(
          maxRelDiff(gotK.subarray((b * cap + pos) * R, (b * cap + pos + 1) * R), cNew) < 1e-5,
          `entry ${b}: latent row differs`,
        );
        for (let h0 = 0; h0 < hh; h0++) {
          const qb = h0 * (dn + dr);
          const qc = new Float64Array(R);
          for (let i = 0; i < dn; i++) {
            for (let j = 0; j < R; j++) qc[j] += pr[qb + i] * W.data[(h0 * (dn + dv) + i) * R + j];
          }
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
          assert(e < 1e-4, `entry ${b} head ${h0} (position ${pos}): MLA output differs by ${e}`);
        }
      }
    } finally {
      h.dispose();
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
