/**
 * Mesa's software Vulkan silently stops a shader invocation after 65,535 loop iterations. Every
 * prefill dispatch is planned with a per-invocation loop bound and refused over the budget; the
 * kernel tests measure the real counts (COUNT builds) against those bounds. This file checks the
 * bounds for the published model shapes, and runs a full-size Qwen3.5-0.8B layer of each kind
 * on the software GPU with the counters on.
 */
import { assert, assertLess } from "@std/assert";
import { type ModelConfig, parseModelConfig } from "../../../model/config.ts";
import { convChannels } from "../../../model/config.ts";
import { ropeInvFreq } from "../../cpu/ops.ts";
import { attentionLoopBound, attentionPlan, gatedPrepLoopBound, mlaPrepLoopBound } from "./attention.ts";
import { DEFAULT_LOOP_BUDGET, MESA_LOOP_CAP, type PlanLimits, type PrefillContext } from "./context.ts";
import { CONV_TOKENS_PER_INVOCATION } from "./conv.ts";
import {
  deltaPhaseALoops,
  deltaPhaseBLoops,
  deltaPhaseCLoops,
  deltaSegmentChunks,
  deltaTuning,
} from "./delta.ts";
import { encodeFill } from "./fill.ts";
import { gemmLoopBound, type GemmWeight } from "./gemm.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { encodeDenseMlp, encodeGatedAttentionMixer, encodeLinearMixer } from "./layers.ts";
import { normLoopBound } from "./norm.ts";
import { checkLoops, run, testContext } from "./testing.ts";
import { PUBLISHED_CONFIGS } from "../../../model/presets.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

const QWEN_08B = PUBLISHED_CONFIGS["Qwen3.5-0.8B"];

/** Published shapes (models.md §5.1). */
const SHAPES: Record<string, unknown> = {
  ...PUBLISHED_CONFIGS,
  "Qwen3.5-27B": {
    ...PUBLISHED_CONFIGS["Qwen3.5-9B"],
    hidden_size: 5120,
    num_hidden_layers: 64,
    num_attention_heads: 24,
    num_key_value_heads: 4,
    linear_num_value_heads: 48,
    intermediate_size: 17408,
  },
};

/** The largest planned per-invocation loop count of every prefill kernel for a config. */
function planLoops(c: ModelConfig, lim: PlanLimits): Record<string, number> {
  const l = c.linear, a = c.attention, H = c.hiddenSize;
  const dims = { hk: l.numKeyHeads, hv: l.numValueHeads, dk: l.keyHeadDim, dv: l.valueHeadDim };
  const tuning = deltaTuning(dims);
  const seg = deltaSegmentChunks(lim, dims, l.kind, tuning);
  const inner = [H, l.numValueHeads * l.valueHeadDim, l.keyHeadDim, l.valueHeadDim];
  for (const m of c.mlp) {
    inner.push(
      m.kind === "dense" ? m.intermediateSize : Math.max(m.expertIntermediateSize, m.sharedIntermediateSize),
    );
  }
  const out: Record<string, number> = {
    conv: CONV_TOKENS_PER_INVOCATION,
    norm: Math.max(normLoopBound(H), normLoopBound(l.valueHeadDim)),
    deltaA: deltaPhaseALoops(dims, l.kind, tuning.chunk),
    deltaB: deltaPhaseBLoops(dims, tuning, seg),
    deltaC: deltaPhaseCLoops(dims, tuning),
  };
  if (a.kind === "gated") {
    inner.push(a.numHeads * a.headDim);
    const plan = attentionPlan(lim, {
      heads: a.numHeads,
      kvHeads: a.numKvHeads,
      qkDim: a.headDim,
      valueDim: a.headDim,
      values: {} as GPUBuffer,
    });
    out.prep = gatedPrepLoopBound(a.headDim);
    out.attention = attentionLoopBound(plan, plan.keysPerPass);
  } else {
    inner.push(a.qkNopeHeadDim, a.kvLoraRank, a.numHeads * a.vHeadDim);
    const plan = attentionPlan(lim, {
      heads: a.numHeads,
      kvHeads: 1,
      qkDim: a.kvLoraRank + a.qkRopeHeadDim,
      valueDim: a.kvLoraRank,
    });
    out.prep = mlaPrepLoopBound(a.kvLoraRank, a.qkRopeHeadDim);
    out.attention = attentionLoopBound(plan, plan.keysPerPass);
  }
  out.gemm = Math.max(...inner.map((k) => gemmLoopBound(k)));
  return out;
}

Deno.test("every prefill kernel's planned loop count stays under Mesa's cap for the published models", () => {
  // A software GPU (32 KiB workgroup memory, 128 MiB bindings) and the H200's limits.
  const limits: PlanLimits[] = [
    { loopBudget: DEFAULT_LOOP_BUDGET, maxWorkgroupStorage: 32768, maxBinding: 134217728 },
    { loopBudget: DEFAULT_LOOP_BUDGET, maxWorkgroupStorage: 49152, maxBinding: 2147483644 },
  ];
  for (const [name, raw] of Object.entries(SHAPES)) {
    const c = parseModelConfig(raw);
    for (const lim of limits) {
      for (const [kernel, n] of Object.entries(planLoops(c, lim))) {
        assert(n > 0, `${name} ${kernel}`);
        assertLess(n, MESA_LOOP_CAP, `${name} ${kernel} (${lim.maxWorkgroupStorage} B workgroup memory)`);
      }
    }
  }
});

function randomWeight(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  rows: number,
  cols: number,
  seed: number,
): GemmWeight {
  const chunks = Math.ceil(cols / 8);
  const buf = zeros(ctx.device, rows * chunks * 4);
  const amp = 1 / Math.sqrt(cols);
  encodeFill(ctx, pass, buf, { count: rows * chunks * 4, f16: true, lo: -amp, hi: amp, seed });
  return { buf, format: "f16", rows, cols, chunks };
}

Deno.test(
  "full-size Qwen3.5-0.8B layers run on the software GPU within their planned loop counts",
  opts,
  async () => {
    const ctx = await testContext();
    const c = parseModelConfig(QWEN_08B);
    const l = c.linear, a = c.attention, H = c.hiddenSize, C = convChannels(c);
    if (a.kind !== "gated") throw new Error("unreachable");
    const hv = l.numValueHeads, dv = l.valueHeadDim, I = 3584;
    const T = 65, p0 = 70;
    const dev = ctx.device;
    const ones = (n: number) => upload(dev, new Float32Array(n).fill(1));
    let seed = 1;
    const x = zeros(dev, T * H);
    const params = upload(
      dev,
      new Float32Array([
        ...new Float32Array(hv).fill(0.5),
        ...new Float32Array(hv),
        ...new Float32Array(dv).fill(1),
      ]),
    );
    const state = {
      conv: zeros(dev, C * 4),
      convLayout: "ring" as const,
      recurrent: zeros(dev, hv * 128 * dv),
    };
    const kvRow = a.numKvHeads * a.headDim;
    const cache = { keys: zeros(dev, (p0 + T) * kvRow), values: zeros(dev, (p0 + T) * kvRow) };
    await run(ctx, (pass) => {
      encodeFill(ctx, pass, x, { count: T * H, f16: false, lo: -1, hi: 1, seed: seed++ });
      encodeFill(ctx, pass, cache.keys, { count: p0 * kvRow, f16: false, lo: -1, hi: 1, seed: seed++ });
      encodeFill(ctx, pass, cache.values, { count: p0 * kvRow, f16: false, lo: -1, hi: 1, seed: seed++ });
      const residual = { buf: x, stride: H };
      const mlp = {
        gateUp: randomWeight(ctx, pass, 2 * I, H, seed++),
        down: randomWeight(ctx, pass, H, I, seed++),
      };
      encodeLinearMixer(ctx, pass, c, {
        T,
        p0,
        x: residual,
        inputNorm: ones(H),
        w: {
          kind: "gdn",
          inProj: randomWeight(ctx, pass, C + hv * dv + 2 * hv, H, seed++),
          conv: ones(C * 4),
          params,
          outProj: randomWeight(ctx, pass, H, hv * dv, seed++),
        },
        state,
      });
      encodeDenseMlp(ctx, pass, c, { T, x: residual, postNorm: ones(H), w: mlp });
      encodeGatedAttentionMixer(ctx, pass, c, {
        T,
        p0,
        x: residual,
        inputNorm: ones(H),
        w: {
          kind: "gated",
          qkv: randomWeight(ctx, pass, a.numHeads * 2 * a.headDim + 2 * kvRow, H, seed++),
          norms: ones(2 * a.headDim),
          invFreq: upload(dev, ropeInvFreq(a.rotaryDim, a.ropeTheta) as Float32Array<ArrayBuffer>),
          o: randomWeight(ctx, pass, H, a.numHeads * a.headDim, seed++),
        },
        cache,
      });
    });
    const worst = await checkLoops(ctx);
    assert(worst > 100, `counters ran (${worst})`);
    const out = await readF32(dev, x, T * H);
    assert(out.every(Number.isFinite), "finite outputs");
  },
);
