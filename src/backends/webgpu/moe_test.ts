/**
 * moe.wgsl (routing on the GPU, the chosen experts' SwiGLU and the shared expert, added to the
 * residual) against the CPU twin: `softmaxInPlace`/`sigmoid` + `topK` routing as in forward.ts and
 * `swiGlu` on the dequantised weights. Qwen routing (softmax, σ-gated shared expert) in f16 and
 * Kimi routing (σ + selection bias, scaled) in int8, with ragged sizes.
 */
import { assert, assertEquals } from "@std/assert";
import { type Matrix, rmsNormRows, sigmoid, softmaxInPlace, topK } from "../cpu/ops.ts";
import { swiGlu } from "../../engine/forward.ts";
import { type ModelConfig, type MoeConfig, parseModelConfig } from "../../model/config.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";
import { interleaveRows, packMatrix, stackRows, unpackMatrix, type WeightFormat } from "./pack.ts";
import { geometry, moeDefines } from "./runtime.ts";

const gpu = await testGpu();

const common = { vocab_size: 64, hidden_size: 72, num_hidden_layers: 1, rms_norm_eps: 1e-6 };
const qwenRaw = {
  ...common,
  model_type: "qwen3_next",
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 16,
  intermediate_size: 32,
  linear_key_head_dim: 8,
  linear_value_head_dim: 16,
  linear_num_key_heads: 1,
  linear_num_value_heads: 1,
  layer_types: ["linear_attention"],
  num_experts: 6,
  num_experts_per_tok: 2,
  moe_intermediate_size: 40,
  shared_expert_intermediate_size: 24,
};
const qwen = parseModelConfig(qwenRaw);
const kimi = parseModelConfig({
  ...common,
  model_type: "kimi_linear",
  intermediate_size: 32,
  moe_intermediate_size: 40,
  num_attention_heads: 2,
  kv_lora_rank: 16,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 8,
  v_head_dim: 8,
  mla_use_nope: true,
  num_experts: 7,
  num_experts_per_token: 3,
  routed_scaling_factor: 2.5,
  first_k_dense_replace: 0,
  linear_attn_config: { head_dim: 16, num_heads: 1, kda_layers: [1], full_attn_layers: [] },
});

/** Split an interleaved (gate, up) row block back into its two matrices. */
function deinterleave(m: Matrix): { gate: Matrix; up: Matrix } {
  const rows = m.rows / 2, cols = m.cols;
  const gate = new Float32Array(rows * cols), up = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    gate.set(m.data.subarray(2 * r * cols, (2 * r + 1) * cols), r * cols);
    up.set(m.data.subarray((2 * r + 1) * cols, (2 * r + 2) * cols), r * cols);
  }
  return { gate: { rows, cols, data: gate }, up: { rows, cols, data: up } };
}

function rows(m: Matrix, start: number, n: number): Matrix {
  return { rows: n, cols: m.cols, data: m.data.slice(start * m.cols, (start + n) * m.cols) };
}

/**
 * Run both kernels on 3 entries and compare with the CPU. `ties`: router logits rounded to
 * integers in [−2, 2], so most experts tie and the order of equal scores decides the top k.
 */
async function check(c: ModelConfig, fmt: WeightFormat, seed: number, ties = false): Promise<void> {
  const m = c.mlp[0] as MoeConfig;
  const h = new Harness(gpu!);
  try {
    const r = rng(seed);
    const g = geometry(c), d = moeDefines(c, m, fmt);
    const H = c.hiddenSize,
      E = m.numExperts,
      I = m.expertIntermediateSize,
      IS = m.sharedIntermediateSize,
      k = m.topK;
    const B = 3, mb = 8, nsh = IS > 0 ? 1 : 0;
    const rnd = (n: number, a = 0.3) => ({ rows: 0, cols: 0, data: randArray(r, n, -a, a) });
    const experts = Array.from({ length: E }, () => ({
      gate: { ...rnd(I * H), rows: I, cols: H },
      up: { ...rnd(I * H), rows: I, cols: H },
      down: { ...rnd(H * I), rows: H, cols: I },
    }));
    const shared = {
      gate: { ...rnd(IS * H), rows: IS, cols: H },
      up: { ...rnd(IS * H), rows: IS, cols: H },
      down: { ...rnd(H * IS), rows: H, cols: IS },
    };
    const gu = packMatrix(stackRows(experts.map((e) => interleaveRows(e.gate, e.up))), fmt);
    const dn = packMatrix(stackRows(experts.map((e) => e.down)), fmt);
    const sgu = packMatrix(interleaveRows(shared.gate, shared.up), fmt);
    const sdn = packMatrix(shared.down, fmt);
    const rl = randArray(r, mb * g.ers, -2, 2);
    if (ties) rl.forEach((v, i) => (rl[i] = Math.round(v)));
    const bias = randArray(r, E, -0.2, 0.2);
    const x = new Float32Array(mb * g.HP);
    for (let b = 0; b < B; b++) x.set(randArray(r, H, -2, 2), b * g.HP);
    const postNorm = randArray(r, H, 0.5, 1.5);
    const normPad = new Float32Array(g.HP);
    normPad.set(postNorm);
    const step = h.stepTable([0, 1, 2], mb);
    const rlBuf = h.buffer(rl),
      xBuf = h.buffer(x),
      hBuf = h.buffer(mb * g.hMoe * 4),
      route = h.buffer(mb * 2 * k * 4);
    const scales = (p: { scales: Float32Array | null }) => p.scales ? h.buffer(p.scales) : h.buffer(16);
    h.run("moe.wgsl", d.up, "rrrrrrrrrww", [
      step,
      rlBuf,
      h.buffer(bias),
      h.buffer(gu.data),
      scales(gu),
      h.buffer(sgu.data),
      scales(sgu),
      xBuf,
      h.buffer(normPad),
      hBuf,
      route,
    ], [Math.ceil(Math.max(I, IS) / Number(d.up.RPG)), k + nsh, B]);
    h.run("moe.wgsl", d.down, "rrrrrrrrw", [
      step,
      route,
      rlBuf,
      h.buffer(dn.data),
      scales(dn),
      h.buffer(sdn.data),
      scales(sdn),
      hBuf,
      xBuf,
    ], [Math.ceil(H / Number(d.down.RPG)), 1, B]);
    const got = await h.f32(xBuf, mb * g.HP);
    const gotRoute = new Uint32Array(await h.read(route, mb * 2 * k * 4));

    const GU = unpackMatrix(gu),
      DN = unpackMatrix(dn),
      SGU = deinterleave(unpackMatrix(sgu)),
      SDN = unpackMatrix(sdn);
    for (let b = 0; b < B; b++) {
      const xb = x.slice(b * g.HP, b * g.HP + H);
      const xn = rmsNormRows(xb.slice(), postNorm, c.rmsNormEps);
      const logits = rl.subarray(b * g.ers, b * g.ers + E);
      let chosen: number[], weights: number[];
      if (m.router === "softmax") {
        const p = Float32Array.from(logits);
        softmaxInPlace(p);
        chosen = topK(p, k);
        weights = chosen.map((e) => p[e]);
      } else {
        const sc = logits.map(sigmoid);
        chosen = topK(sc.map((v, e) => v + bias[e]), k);
        weights = chosen.map((e) => sc[e]);
      }
      const sum = weights.reduce((s, v) => s + v, 0) + (m.router === "sigmoid" ? 1e-20 : 0);
      weights = weights.map((v) => (m.normTopK ? v / sum : v) * m.routedScalingFactor);
      assertEquals(
        Array.from(gotRoute.subarray(b * 2 * k, b * 2 * k + k)),
        chosen,
        `entry ${b}: chosen experts`,
      );
      const want = xb.slice();
      chosen.forEach((e, j) => {
        const ex = deinterleave(rows(GU, e * 2 * I, 2 * I));
        const y = swiGlu({ gate: ex.gate, up: ex.up, down: rows(DN, e * H, H) }, xn);
        for (let i = 0; i < H; i++) want[i] += weights[j] * y[i];
      });
      const ys = swiGlu({ gate: SGU.gate, up: SGU.up, down: SDN }, xn);
      const gs = m.router === "softmax" ? sigmoid(rl[b * g.ers + E]) : 1;
      for (let i = 0; i < H; i++) want[i] += gs * ys[i];
      const e = maxRelDiff(got.subarray(b * g.HP, b * g.HP + H), want);
      assert(e < 1e-4, `${m.router} ${fmt} entry ${b}: output differs by ${e}`);
    }
  } finally {
    h.dispose();
  }
}

Deno.test({
  name:
    "MoE kernels with Qwen routing (softmax, top-k renormalised, σ-gated shared expert), f16, equal the CPU twin",
  ignore: !gpu,
  fn: () => check(qwen, "f16", 31),
});

Deno.test({
  name:
    "MoE kernels with Kimi routing (σ + bias selection, renormalised, scaled, shared expert), int8, equal the CPU twin",
  ignore: !gpu,
  fn: () => check(kimi, "int8", 32),
});

// More experts than the routing workgroup has threads (each thread ranks two), top 8, mostly ties.
const wide = parseModelConfig({
  ...qwenRaw,
  num_experts: 300,
  num_experts_per_tok: 8,
  moe_intermediate_size: 24,
  shared_expert_intermediate_size: 16,
});

Deno.test({
  name:
    "MoE routing over 300 experts with tied scores picks the CPU's top 8 in its order (equal scores: lower index first)",
  ignore: !gpu,
  fn: () => check(wide, "f16", 33, true),
});
