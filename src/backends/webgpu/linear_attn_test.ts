/**
 * linear_attn.wgsl (one fused GDN or KDA decode step) against its CPU twins: `shortConv` for one
 * token, `l2NormRows`, the decay/β gates, `deltaRuleStep`, and the elementwise half of
 * `gatedRmsNorm` (the per-head mean square is checked through the partial sums). Ragged head
 * counts and dims, random state, positions below and above the conv width, and a stopped entry
 * whose state must stay untouched.
 */
import { assert, assertEquals } from "@std/assert";
import { deltaRuleStep, l2NormRows, shortConv, sigmoid, silu, softplus } from "../cpu/ops.ts";
import { type ModelConfig, parseModelConfig } from "../../model/config.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";
import { packMatrix, unpackMatrix } from "./pack.ts";
import { geometry, linearDefines } from "./runtime.ts";

const gpu = await testGpu();

const gdnConfig = parseModelConfig({
  model_type: "qwen3_5_text",
  vocab_size: 64,
  hidden_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 16,
  intermediate_size: 32,
  linear_key_head_dim: 24,
  linear_value_head_dim: 48,
  linear_num_key_heads: 3,
  linear_num_value_heads: 6,
  layer_types: ["linear_attention"],
});

const kdaConfig = parseModelConfig({
  model_type: "kimi_linear",
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 32,
  moe_intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  kv_lora_rank: 16,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 8,
  v_head_dim: 8,
  mla_use_nope: true,
  num_experts: 2,
  num_experts_per_token: 1,
  first_k_dense_replace: 1,
  linear_attn_config: { head_dim: 32, num_heads: 3, kda_layers: [1], full_attn_layers: [] },
});

// Head dims where one thread convolves several channels, the last round only partly (128 keys:
// 2·128 + 16 channels over 128 threads), as in the Qwen3.5 shapes.
const gdnWideConfig = parseModelConfig({
  model_type: "qwen3_5_text",
  vocab_size: 64,
  hidden_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 16,
  intermediate_size: 32,
  linear_key_head_dim: 128,
  linear_value_head_dim: 32,
  linear_num_key_heads: 2,
  linear_num_value_heads: 4,
  layer_types: ["linear_attention"],
});

// A KDA head dim above the workgroup size: two decay rows per thread, 18 state rows per thread.
const kdaWideConfig = parseModelConfig({
  model_type: "kimi_linear",
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 32,
  moe_intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  kv_lora_rank: 16,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 8,
  v_head_dim: 8,
  mla_use_nope: true,
  num_experts: 2,
  num_experts_per_token: 1,
  first_k_dense_replace: 1,
  linear_attn_config: { head_dim: 144, num_heads: 2, kda_layers: [1], full_attn_layers: [] },
});

async function checkStep(c: ModelConfig, seed: number): Promise<void> {
  const h = new Harness(gpu!);
  try {
    const r = rng(seed);
    const g = geometry(c), l = c.linear, d = linearDefines(c);
    const kda = l.kind === "kda";
    const hk = l.numKeyHeads,
      hv = l.numValueHeads,
      dk = l.keyHeadDim,
      dv = l.valueHeadDim,
      K = l.convKernel,
      C = g.C;
    const P = hv * dk;
    const slots = [2, 0, 1], positions = [0, 2, 9], done = [0, 0, 1];
    const S = 3, B = slots.length, mb = 8;
    const proj = randArray(r, mb * g.PS, -1, 1);
    const convW = randArray(r, C * K, -0.6, 0.6);
    const ring = randArray(r, S * C * K, -1, 1);
    const state = randArray(r, S * hv * dk * dv, -0.3, 0.3);
    const aLog = randArray(r, hv, -1, 1),
      dtBias = randArray(r, kda ? hv * dk : hv, -0.5, 0.5),
      norm = randArray(r, dv, 0.5, 1.5);
    const params = new Float32Array([...aLog, ...dtBias, ...norm]);
    const fB = packMatrix({ rows: P, cols: dk, data: randArray(r, P * dk, -0.3, 0.3) }, "f16");
    const gB = packMatrix({ rows: P, cols: dv, data: randArray(r, P * dv, -0.3, 0.3) }, "f16");
    const fg = new Uint32Array([...fB.data, ...gB.data]);
    const headers = Array.from({ length: S }, () => ({}));
    slots.forEach((s, b) => headers[s] = { POS: positions[b], DONE: done[b] });
    const ringBuf = h.buffer(ring),
      stateBuf = h.buffer(state),
      yBuf = h.buffer(mb * g.linOut * 4),
      ssBuf = h.buffer(mb * hv * g.NB * 4);
    h.run("linear_attn.wgsl", d, "rrrrwwrrww", [
      h.stepTable(slots, mb),
      h.slots(headers),
      h.buffer(proj),
      h.buffer(convW),
      ringBuf,
      stateBuf,
      h.buffer(params),
      h.buffer(kda ? fg : new Uint32Array(4)),
      yBuf,
      ssBuf,
    ], [g.NB, hv, B]);
    const gotRing = await h.f32(ringBuf, ring.length), gotState = await h.f32(stateBuf, state.length);
    const gotY = await h.f32(yBuf, mb * g.linOut), gotSs = await h.f32(ssBuf, mb * hv * g.NB);

    const fBm = unpackMatrix(fB), gBm = unpackMatrix(gB);
    const wantRing = ring.slice(), wantState = state.slice();
    for (let b = 0; b < B; b++) {
      const s = slots[b], pos = positions[b];
      const raw = proj.subarray(b * g.PS, b * g.PS + C);
      // The CPU window: column j holds position pos - K + j.
      const win = new Float32Array(C * K);
      const slotOf = (p: number) => ((p % K) + K) % K;
      for (let ch = 0; ch < C; ch++) {
        for (let j = 0; j < K; j++) win[ch * K + j] = ring[(s * C + ch) * K + slotOf(pos - K + j)];
      }
      const yc = shortConv(raw, 1, win, convW, C, K);
      const S0 = state.slice(s * hv * dk * dv, (s + 1) * hv * dk * dv);
      let fAu: Float32Array | null = null, gAu: Float32Array | null = null;
      if (kda) {
        fAu = proj.slice(b * g.PS + C, b * g.PS + C + dk);
        gAu = proj.slice(b * g.PS + C + dk + hv, b * g.PS + C + dk + hv + dv);
      }
      for (let hh = 0; hh < hv; hh++) {
        const kh = Math.floor(hh / (hv / hk));
        const q = l2NormRows(yc.slice(kh * dk, (kh + 1) * dk), dk, 1 / Math.sqrt(dk));
        const k = l2NormRows(yc.slice(hk * dk + kh * dk, hk * dk + (kh + 1) * dk), dk);
        const v = yc.slice(2 * hk * dk + hh * dv, 2 * hk * dk + (hh + 1) * dv);
        let decay: Float32Array, beta: number, gate: Float32Array;
        if (kda) {
          decay = new Float32Array(dk);
          for (let i = 0; i < dk; i++) {
            let f = 0;
            for (let m = 0; m < dk; m++) f += fBm.data[(hh * dk + i) * dk + m] * fAu![m];
            decay[i] = -Math.exp(aLog[hh]) * softplus(f + dtBias[hh * dk + i]);
          }
          beta = sigmoid(proj[b * g.PS + C + dk + hh]);
          gate = new Float32Array(dv);
          for (let j = 0; j < dv; j++) {
            let gg = 0;
            for (let m = 0; m < dv; m++) gg += gBm.data[(hh * dv + j) * dv + m] * gAu![m];
            gate[j] = sigmoid(gg);
          }
        } else {
          decay = new Float32Array([
            -Math.exp(aLog[hh]) * softplus(proj[b * g.PS + C + hv * dv + hv + hh] + dtBias[hh]),
          ]);
          beta = sigmoid(proj[b * g.PS + C + hv * dv + hh]);
          gate = proj.slice(b * g.PS + C + hh * dv, b * g.PS + C + (hh + 1) * dv).map(silu);
        }
        const Sh = S0.subarray(hh * dk * dv, (hh + 1) * dk * dv);
        const o = new Float32Array(dv);
        deltaRuleStep(Sh, q, k, v, decay, beta, o);
        const want = o.map((x, j) => x * norm[j] * gate[j]);
        const got = gotY.subarray(b * g.linOut + hh * dv, b * g.linOut + (hh + 1) * dv);
        const e = maxRelDiff(got, want);
        assert(e < 1e-4, `${l.kind} entry ${b} head ${hh}: output differs by ${e}`);
        let ss = 0, gs = 0;
        for (let j = 0; j < dv; j++) ss += o[j] * o[j];
        for (let k2 = 0; k2 < g.NB; k2++) gs += gotSs[(b * hv + hh) * g.NB + k2];
        assert(
          Math.abs(gs - ss) <= 1e-4 * Math.max(1, ss),
          `${l.kind} entry ${b} head ${hh}: Σo² ${gs} vs ${ss}`,
        );
      }
      if (!done[b]) {
        wantState.set(S0, s * hv * dk * dv);
        for (let ch = 0; ch < C; ch++) wantRing[(s * C + ch) * K + slotOf(pos)] = raw[ch];
        // After the step the window holds positions pos-K+1..pos: the same data the CPU window has.
        for (let ch = 0; ch < C; ch++) {
          for (let j = 0; j < K; j++) {
            assertEquals(wantRing[(s * C + ch) * K + slotOf(pos + 1 - K + j)], win[ch * K + j]);
          }
        }
      }
    }
    assert(
      maxRelDiff(gotState, wantState) < 1e-5,
      `${l.kind}: state differs by ${maxRelDiff(gotState, wantState)}`,
    );
    assertEquals(Array.from(gotRing), Array.from(wantRing), `${l.kind}: conv ring differs`);
  } finally {
    h.dispose();
  }
}

Deno.test({
  name:
    "GDN decode step kernel (conv ring, L2 norm, scalar decay, β, delta rule, SiLU gate) equals the CPU twins",
  ignore: !gpu,
  fn: () => checkStep(gdnConfig, 11),
});

Deno.test({
  name:
    "KDA decode step kernel (per-channel decay from f_b·f_a, sigmoid gate from g_b·g_a) equals the CPU twins",
  ignore: !gpu,
  fn: () => checkStep(kdaConfig, 12),
});

Deno.test({
  name: "GDN decode step kernel with 128-dim keys (several conv channels per thread) equals the CPU twins",
  ignore: !gpu,
  fn: () => checkStep(gdnWideConfig, 13),
});

Deno.test({
  name: "KDA decode step kernel with a head dim above the workgroup size equals the CPU twins",
  ignore: !gpu,
  fn: () => checkStep(kdaWideConfig, 14),
});
