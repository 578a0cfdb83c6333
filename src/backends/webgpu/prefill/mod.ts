/**
 * GPU chunked prefill (issue 4, phase 1): WGSL kernels (`kernels/prefill_*.wgsl`) and their
 * dispatch code for processing a T-token prompt — or an append to an existing session — in
 * parallel, continuing and updating the session's state on the GPU.
 *
 * How a backend's forward pass uses it, for T new tokens at positions p0 … p0+T−1:
 *
 *   const ctx = new PrefillContext(device);            // once per device
 *   const pass = encoder.beginComputePass();
 *   encodeEmbed(ctx, pass, { T, ids, embed, x, xStride: H });   // x: [T, H] f32 residual rows
 *   for each layer i:
 *     linear (GDN/KDA):   encodeLinearMixer(ctx, pass, config, { T, p0, x: { buf: x, stride: H },
 *                            inputNorm, w: LinearLayerWeights, state: LinearStateBuffers })
 *     Qwen attention:     encodeGatedAttentionMixer(ctx, pass, config, { T, p0, x, inputNorm,
 *                            w: GatedAttentionLayerWeights, cache: KvCacheBuffers })
 *     Kimi MLA:           encodeMlaMixer(ctx, pass, config, { T, p0, x, inputNorm, w: MlaLayerWeights, cache })
 *     dense MLP:          encodeDenseMlp(ctx, pass, config, { T, x, postNorm, w: DenseMlpWeights })
 *   // then the final norm and LM head of row T−1 (encodeRmsNorm + encodeGemm with M = 1)
 *   pass.end(); device.queue.submit([encoder.finish()]); ctx.reset();
 *
 * The weight interfaces match the decode runtime's packing (stacked input projections, f16
 * rows padded to 16-byte chunks, `params` = A_log | dt_bias | norm); the conv window may be the
 * decode ring (`convLayout: "ring"`) or the session state's oldest-first `[C, K]` layout; KV rows
 * are addressed `row0 + position`. Any T works (one call, or pieces each continuing the last).
 * MoE feed-forward blocks are not covered yet.
 * @module
 */
export {
  DEFAULT_LOOP_BUDGET,
  MESA_LOOP_CAP,
  type PlanLimits,
  PrefillContext,
  type PrefillContextOptions,
} from "./context.ts";
export {
  encodeGemm,
  type GemmArgs,
  gemmLoopBound,
  type GemmWeight,
  type PrefillWeightFormat,
} from "./gemm.ts";
export { type EmbedArgs, encodeEmbed } from "./embed.ts";
export { type ConvArgs, type ConvWindowLayout, encodeConv } from "./conv.ts";
export { type DeltaArgs, type DeltaDims, type DeltaTuning, deltaTuning, encodeDelta } from "./delta.ts";
export { encodeGatedNorm, encodeRmsNorm, type GatedNormArgs, type RmsNormArgs } from "./norm.ts";
export {
  type AttentionArgs,
  attentionPlan,
  encodeAttention,
  encodeGatedAttentionPrep,
  encodeMlaPrep,
  type GatedPrepArgs,
  type MlaPrepArgs,
} from "./attention.ts";
export {
  type DenseMlpWeights,
  encodeDenseMlp,
  encodeGatedAttentionMixer,
  encodeLinearMixer,
  encodeMlaMixer,
  type GatedAttentionLayerWeights,
  type KvCacheBuffers,
  type LayerCall,
  type LinearLayerWeights,
  type LinearStateBuffers,
  type MlaLayerWeights,
  type Residual,
} from "./layers.ts";
export { type PackedWeight, packWeight, unpackWeight, uploadWeight } from "./weights.ts";
export {
  kvCacheBuffers,
  linearStateBuffers,
  type PrefillLayerWeights,
  uploadLayerWeights,
} from "./upload.ts";
