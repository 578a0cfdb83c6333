/**
 * `config.json` of the three hybrid families, parsed with zod and normalised into one
 * {@link ModelConfig} that the engine, the backends and the capsule format share.
 * @module
 */
import { z } from "zod";
import { CapsuleError } from "../errors.ts";

/** The model families Capsule implements. */
export type Family = "qwen3_5" | "qwen3_next" | "kimi_linear";

/** Which mixer a layer uses. */
export type LayerKind = "linear" | "attention";

/** Gated DeltaNet (Qwen) or Kimi Delta Attention (Kimi) geometry. */
export interface LinearAttentionConfig {
  /** "gdn": scalar decay per head (Qwen); "kda": per-key-channel decay (Kimi). */
  kind: "gdn" | "kda";
  numKeyHeads: number;
  numValueHeads: number;
  keyHeadDim: number;
  valueHeadDim: number;
  convKernel: number;
}

/** Qwen gated full attention with partial rotary embeddings. */
export interface GatedAttentionConfig {
  kind: "gated";
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Number of leading head dims that are rotated (head_dim · partial_rotary_factor). */
  rotaryDim: number;
  ropeTheta: number;
  /**
   * Round the RoPE inverse frequencies to bf16. transformers keeps them in a buffer that is cast
   * with the model: a model cast to bf16 (config `dtype: "bfloat16"`) rotates with bf16-rounded
   * frequencies, and the reference outputs we verify against were produced that way.
   */
  invFreqBf16: boolean;
}

/** Kimi multi-head latent attention without positional encoding. */
export interface MlaConfig {
  kind: "mla";
  numHeads: number;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  /** kv_a_layernorm is built without an eps argument upstream, so it is always 1e-6. */
  kvNormEps: number;
}

/** A dense SwiGLU feed-forward block. */
export interface DenseMlpConfig {
  kind: "dense";
  intermediateSize: number;
}

/** A mixture-of-experts feed-forward block. */
export interface MoeConfig {
  kind: "moe";
  numExperts: number;
  topK: number;
  expertIntermediateSize: number;
  /** Size of the shared expert (0 = none). */
  sharedIntermediateSize: number;
  /** "softmax": Qwen (softmax → top-k, shared expert gated by σ); "sigmoid": Kimi (σ + bias selection). */
  router: "softmax" | "sigmoid";
  normTopK: boolean;
  routedScalingFactor: number;
}

/** The normalised, family-independent description of a model's text decoder. */
export interface ModelConfig {
  family: Family;
  /** The `model_type` as written in config.json. */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  rmsNormEps: number;
  /** Qwen norms apply `(1 + w)`; Kimi norms apply `w`. */
  zeroCenteredNorm: boolean;
  layerKinds: LayerKind[];
  linear: LinearAttentionConfig;
  attention: GatedAttentionConfig | MlaConfig;
  /** Feed-forward block of each layer. */
  mlp: (DenseMlpConfig | MoeConfig)[];
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

const tokenIds = z.union([z.number().int(), z.array(z.number().int())]).nullish();

const ropeParameters = z.object({
  rope_theta: z.number().positive().optional(),
  partial_rotary_factor: z.number().positive().max(1).optional(),
  rope_type: z.string().optional(),
}).loose();

const qwenLayerTypes = z.array(z.enum(["linear_attention", "full_attention"]));

const qwenTextCommon = {
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive(),
  head_dim: z.number().int().positive(),
  rms_norm_eps: z.number().positive().default(1e-6),
  hidden_act: z.literal("silu").default("silu"),
  linear_conv_kernel_dim: z.number().int().positive().default(4),
  linear_key_head_dim: z.number().int().positive(),
  linear_value_head_dim: z.number().int().positive(),
  linear_num_key_heads: z.number().int().positive(),
  linear_num_value_heads: z.number().int().positive(),
  layer_types: qwenLayerTypes.optional(),
  full_attention_interval: z.number().int().positive().default(4),
  rope_parameters: ropeParameters.optional(),
  rope_theta: z.number().positive().optional(),
  partial_rotary_factor: z.number().positive().max(1).optional(),
  max_position_embeddings: z.number().int().positive().default(32768),
  tie_word_embeddings: z.boolean().optional(),
  bos_token_id: tokenIds,
  eos_token_id: tokenIds,
  attention_bias: z.literal(false).default(false),
  dtype: z.string().optional(),
  torch_dtype: z.string().optional(),
};

const qwen35TextSchema = z.object({
  ...qwenTextCommon,
  model_type: z.enum(["qwen3_5_text", "qwen3_5_moe_text"]),
  intermediate_size: z.number().int().positive().optional(),
  num_experts: z.number().int().nonnegative().optional(),
  num_experts_per_tok: z.number().int().positive().optional(),
  moe_intermediate_size: z.number().int().positive().optional(),
  shared_expert_intermediate_size: z.number().int().nonnegative().optional(),
}).loose();

const qwen35Schema = z.object({
  model_type: z.enum(["qwen3_5", "qwen3_5_moe"]),
  tie_word_embeddings: z.boolean().optional(),
  text_config: z.record(z.string(), z.unknown()),
}).loose();

const qwenNextSchema = z.object({
  ...qwenTextCommon,
  model_type: z.literal("qwen3_next"),
  intermediate_size: z.number().int().positive(),
  num_experts: z.number().int().nonnegative().default(512),
  num_experts_per_tok: z.number().int().positive().default(10),
  moe_intermediate_size: z.number().int().positive().default(512),
  shared_expert_intermediate_size: z.number().int().nonnegative().default(512),
  norm_topk_prob: z.boolean().default(true),
  decoder_sparse_step: z.number().int().positive().default(1),
  mlp_only_layers: z.array(z.number().int().nonnegative()).default([]),
}).loose();

const kimiSchema = z.object({
  model_type: z.literal("kimi_linear"),
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  moe_intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  kv_lora_rank: z.number().int().positive(),
  q_lora_rank: z.null().optional(),
  qk_nope_head_dim: z.number().int().positive(),
  qk_rope_head_dim: z.number().int().positive(),
  v_head_dim: z.number().int().positive(),
  mla_use_nope: z.literal(true, { message: "only mla_use_nope=true (Kimi-Linear NoPE) is supported" }),
  rms_norm_eps: z.number().positive().default(1e-5),
  hidden_act: z.literal("silu").default("silu"),
  num_experts: z.number().int().positive(),
  num_experts_per_token: z.number().int().positive(),
  num_shared_experts: z.number().int().nonnegative().default(1),
  moe_router_activation_func: z.literal("sigmoid").default("sigmoid"),
  moe_renormalize: z.boolean().default(true),
  routed_scaling_factor: z.number().positive().default(1),
  num_expert_group: z.literal(1, {
    message: "group-limited routing with more than one group is not supported",
  })
    .default(1),
  topk_group: z.literal(1).default(1),
  first_k_dense_replace: z.number().int().nonnegative().default(0),
  moe_layer_freq: z.number().int().positive().default(1),
  model_max_length: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive().optional(),
  tie_word_embeddings: z.boolean().default(false),
  bos_token_id: tokenIds,
  eos_token_id: tokenIds,
  linear_attn_config: z.object({
    head_dim: z.number().int().positive(),
    num_heads: z.number().int().positive(),
    short_conv_kernel_size: z.number().int().positive().default(4),
    kda_layers: z.array(z.number().int().min(1, { message: "layer numbers are 1-based (≥ 1)" })),
    full_attn_layers: z.array(z.number().int().min(1, { message: "layer numbers are 1-based (≥ 1)" })),
  }).loose(),
}).loose();

function ids(v: number | number[] | null | undefined): number[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

function configError(file: string, detail: string): CapsuleError {
  return new CapsuleError("invalid_config", `${file}: ${detail}`);
}

function parseWith<T>(schema: z.ZodType<T>, raw: unknown, file: string): T {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw configError(file, issues);
  }
  return r.data;
}

function qwenLayerKinds(
  layerTypes: z.infer<typeof qwenLayerTypes> | undefined,
  numLayers: number,
  interval: number,
  file: string,
): LayerKind[] {
  const types = layerTypes ??
    Array.from(
      { length: numLayers },
      (_, i) => (i + 1) % interval === 0 ? "full_attention" : "linear_attention",
    );
  if (types.length !== numLayers) {
    throw configError(file, `layer_types has ${types.length} entries but num_hidden_layers is ${numLayers}`);
  }
  return types.map((t) => t === "full_attention" ? "attention" : "linear");
}

function qwenCommon(c: z.infer<typeof qwen35TextSchema> | z.infer<typeof qwenNextSchema>, file: string) {
  const rope = c.rope_parameters ?? {};
  const partial = rope.partial_rotary_factor ?? c.partial_rotary_factor ?? 0.25;
  const rotaryDim = Math.round(c.head_dim * partial);
  if (rotaryDim % 2 !== 0) throw configError(file, `rotary dim ${rotaryDim} must be even`);
  if (c.linear_num_value_heads % c.linear_num_key_heads !== 0) {
    throw configError(file, "linear_num_value_heads must be a multiple of linear_num_key_heads");
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    throw configError(file, "num_attention_heads must be a multiple of num_key_value_heads");
  }
  return {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    rmsNormEps: c.rms_norm_eps,
    zeroCenteredNorm: true,
    layerKinds: qwenLayerKinds(c.layer_types, c.num_hidden_layers, c.full_attention_interval, file),
    linear: {
      kind: "gdn",
      numKeyHeads: c.linear_num_key_heads,
      numValueHeads: c.linear_num_value_heads,
      keyHeadDim: c.linear_key_head_dim,
      valueHeadDim: c.linear_value_head_dim,
      convKernel: c.linear_conv_kernel_dim,
    } satisfies LinearAttentionConfig,
    attention: {
      kind: "gated",
      numHeads: c.num_attention_heads,
      numKvHeads: c.num_key_value_heads,
      headDim: c.head_dim,
      rotaryDim,
      ropeTheta: rope.rope_theta ?? c.rope_theta ?? 10000,
      invFreqBf16: (c.dtype ?? c.torch_dtype) === "bfloat16",
    } satisfies GatedAttentionConfig,
    maxPositionEmbeddings: c.max_position_embeddings,
    bosTokenId: ids(c.bos_token_id)[0] ?? null,
    eosTokenIds: ids(c.eos_token_id),
  };
}

function parseQwen35Text(raw: unknown, tieFallback: boolean | undefined, file: string): ModelConfig {
  const c = parseWith(qwen35TextSchema, raw, file);
  const isMoe = c.model_type === "qwen3_5_moe_text";
  let mlp: DenseMlpConfig | MoeConfig;
  if (isMoe) {
    mlp = {
      kind: "moe",
      numExperts: c.num_experts ?? 256,
      topK: c.num_experts_per_tok ?? 8,
      expertIntermediateSize: c.moe_intermediate_size ?? 512,
      sharedIntermediateSize: c.shared_expert_intermediate_size ?? 512,
      router: "softmax",
      normTopK: true,
      routedScalingFactor: 1,
    };
  } else {
    if (c.intermediate_size === undefined) {
      throw configError(file, "intermediate_size is required for qwen3_5_text");
    }
    mlp = { kind: "dense", intermediateSize: c.intermediate_size };
  }
  return {
    family: "qwen3_5",
    modelType: c.model_type,
    ...qwenCommon(c, file),
    mlp: Array.from({ length: c.num_hidden_layers }, () => mlp),
    tieWordEmbeddings: c.tie_word_embeddings ?? tieFallback ?? false,
  };
}

function parseQwenNext(raw: unknown, file: string): ModelConfig {
  const c = parseWith(qwenNextSchema, raw, file);
  const mlp = Array.from({ length: c.num_hidden_layers }, (_, i): DenseMlpConfig | MoeConfig => {
    const sparse = !c.mlp_only_layers.includes(i) && c.num_experts > 0 &&
      (i + 1) % c.decoder_sparse_step === 0;
    if (!sparse) return { kind: "dense", intermediateSize: c.intermediate_size };
    return {
      kind: "moe",
      numExperts: c.num_experts,
      topK: c.num_experts_per_tok,
      expertIntermediateSize: c.moe_intermediate_size,
      sharedIntermediateSize: c.shared_expert_intermediate_size,
      router: "softmax",
      normTopK: c.norm_topk_prob,
      routedScalingFactor: 1,
    };
  });
  return {
    family: "qwen3_next",
    modelType: c.model_type,
    ...qwenCommon(c, file),
    mlp,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
  };
}

function parseKimi(raw: unknown, file: string): ModelConfig {
  const c = parseWith(kimiSchema, raw, file);
  const la = c.linear_attn_config;
  const n = c.num_hidden_layers;
  const layerKinds: (LayerKind | undefined)[] = new Array(n).fill(undefined);
  for (const [list, kind] of [[la.kda_layers, "linear"], [la.full_attn_layers, "attention"]] as const) {
    for (const oneBased of list) {
      if (oneBased < 1 || oneBased > n) {
        throw configError(
          file,
          `linear_attn_config lists layer ${oneBased}, outside 1..${n} (the lists are 1-based)`,
        );
      }
      if (layerKinds[oneBased - 1] !== undefined) {
        throw configError(file, `linear_attn_config lists layer ${oneBased} twice`);
      }
      layerKinds[oneBased - 1] = kind;
    }
  }
  const missing = layerKinds.findIndex((k) => k === undefined);
  if (missing >= 0) {
    throw configError(file, `layer ${missing + 1} (1-based) is in neither kda_layers nor full_attn_layers`);
  }
  if (c.num_shared_experts > 1) throw configError(file, "num_shared_experts > 1 is not supported");
  const mlp = Array.from({ length: n }, (_, i): DenseMlpConfig | MoeConfig => {
    const sparse = i >= c.first_k_dense_replace && i % c.moe_layer_freq === 0;
    if (!sparse) return { kind: "dense", intermediateSize: c.intermediate_size };
    return {
      kind: "moe",
      numExperts: c.num_experts,
      topK: c.num_experts_per_token,
      expertIntermediateSize: c.moe_intermediate_size,
      sharedIntermediateSize: c.num_shared_experts * c.moe_intermediate_size,
      router: "sigmoid",
      normTopK: c.moe_renormalize,
      routedScalingFactor: c.routed_scaling_factor,
    };
  });
  return {
    family: "kimi_linear",
    modelType: c.model_type,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: n,
    rmsNormEps: c.rms_norm_eps,
    zeroCenteredNorm: false,
    layerKinds: layerKinds as LayerKind[],
    linear: {
      kind: "kda",
      numKeyHeads: la.num_heads,
      numValueHeads: la.num_heads,
      keyHeadDim: la.head_dim,
      valueHeadDim: la.head_dim,
      convKernel: la.short_conv_kernel_size,
    },
    attention: {
      kind: "mla",
      numHeads: c.num_attention_heads,
      kvLoraRank: c.kv_lora_rank,
      qkNopeHeadDim: c.qk_nope_head_dim,
      qkRopeHeadDim: c.qk_rope_head_dim,
      vHeadDim: c.v_head_dim,
      kvNormEps: 1e-6,
    },
    mlp,
    tieWordEmbeddings: c.tie_word_embeddings,
    maxPositionEmbeddings: c.model_max_length ?? c.max_position_embeddings ?? 1048576,
    bosTokenId: ids(c.bos_token_id)[0] ?? null,
    eosTokenIds: ids(c.eos_token_id),
  };
}

/**
 * Parse the contents of a `config.json`. `file` names the source in error messages.
 * Throws {@link CapsuleError} `invalid_config` or `unsupported_model` with the offending field.
 */
export function parseModelConfig(raw: unknown, file = "config.json"): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw configError(file, "expected a JSON object");
  }
  const modelType = (raw as Record<string, unknown>).model_type;
  switch (modelType) {
    case "qwen3_5":
    case "qwen3_5_moe": {
      const c = parseWith(qwen35Schema, raw, file);
      return parseQwen35Text(c.text_config, c.tie_word_embeddings, `${file} (text_config)`);
    }
    case "qwen3_5_text":
    case "qwen3_5_moe_text":
      return parseQwen35Text(raw, undefined, file);
    case "qwen3_next":
      return parseQwenNext(raw, file);
    case "kimi_linear":
      return parseKimi(raw, file);
    default:
      throw new CapsuleError(
        "unsupported_model",
        `${file}: model_type ${JSON.stringify(modelType)} is not supported ` +
          `(supported: qwen3_5, qwen3_5_text, qwen3_5_moe, qwen3_5_moe_text, qwen3_next, kimi_linear)`,
      );
  }
}

/** Read `config.json` (and `generation_config.json` for EOS ids when present) from a model folder. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const file = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new CapsuleError("model_not_found", `${file}: cannot read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw configError(file, `not valid JSON (${(e as Error).message})`);
  }
  const config = parseModelConfig(raw, file);
  try {
    const gen = JSON.parse(await Deno.readTextFile(`${dir}/generation_config.json`));
    const eos = gen?.eos_token_id;
    if (config.eosTokenIds.length === 0 && (typeof eos === "number" || Array.isArray(eos))) {
      config.eosTokenIds = ids(eos).filter((x) => Number.isInteger(x));
    }
  } catch {
    // generation_config.json is optional.
  }
  return config;
}

/** Channels of the short conv: q, k and v concatenated. */
export function convChannels(c: ModelConfig): number {
  const l = c.linear;
  return 2 * l.numKeyHeads * l.keyHeadDim + l.numValueHeads * l.valueHeadDim;
}
