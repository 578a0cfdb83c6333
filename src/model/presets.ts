/**
 * The published configurations of real hybrid models (reference/models.md §4.1 and §5.1), as the
 * `config.json` objects they ship with. Benchmarks build synthetic checkpoints in these shapes and
 * size reports use them; `parseModelConfig` turns each into a {@link ModelConfig}.
 * @module
 */
import { type ModelConfig, parseModelConfig } from "./config.ts";

/** Names of the published models. */
export type PublishedModel = "Qwen3.5-0.8B" | "Qwen3.5-9B" | "Qwen3-Next-80B-A3B" | "Kimi-Linear-48B-A3B";

const qwen35 = (o: Record<string, unknown>): Record<string, unknown> => ({
  model_type: "qwen3_5_text",
  vocab_size: 248320,
  head_dim: 256,
  linear_key_head_dim: 128,
  linear_value_head_dim: 128,
  linear_num_key_heads: 16,
  linear_conv_kernel_dim: 4,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 262144,
  full_attention_interval: 4,
  rope_parameters: { rope_type: "default", rope_theta: 10000000, partial_rotary_factor: 0.25 },
  ...o,
});

export const PUBLISHED_CONFIGS: Record<PublishedModel, Record<string, unknown>> = {
  "Qwen3.5-0.8B": qwen35({
    hidden_size: 1024,
    num_hidden_layers: 24,
    num_attention_heads: 8,
    num_key_value_heads: 2,
    linear_num_value_heads: 16,
    intermediate_size: 3584,
    tie_word_embeddings: true,
  }),
  "Qwen3.5-9B": qwen35({
    hidden_size: 4096,
    num_hidden_layers: 32,
    num_attention_heads: 16,
    num_key_value_heads: 4,
    linear_num_value_heads: 32,
    intermediate_size: 12288,
    tie_word_embeddings: false,
  }),
  "Qwen3-Next-80B-A3B": {
    model_type: "qwen3_next",
    vocab_size: 151936,
    hidden_size: 2048,
    intermediate_size: 5120,
    num_hidden_layers: 48,
    num_attention_heads: 16,
    num_key_value_heads: 2,
    head_dim: 256,
    linear_key_head_dim: 128,
    linear_value_head_dim: 128,
    linear_num_key_heads: 16,
    linear_num_value_heads: 32,
    linear_conv_kernel_dim: 4,
    num_experts: 512,
    num_experts_per_tok: 10,
    moe_intermediate_size: 512,
    shared_expert_intermediate_size: 512,
    norm_topk_prob: true,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 262144,
    rope_theta: 10000000,
    partial_rotary_factor: 0.25,
  },
  "Kimi-Linear-48B-A3B": {
    model_type: "kimi_linear",
    vocab_size: 163840,
    hidden_size: 2304,
    intermediate_size: 9216,
    moe_intermediate_size: 1024,
    num_hidden_layers: 27,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    kv_lora_rank: 512,
    q_lora_rank: null,
    qk_nope_head_dim: 128,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    mla_use_nope: true,
    rms_norm_eps: 1e-5,
    model_max_length: 1048576,
    num_experts: 256,
    num_experts_per_token: 8,
    num_shared_experts: 1,
    moe_router_activation_func: "sigmoid",
    moe_renormalize: true,
    routed_scaling_factor: 2.446,
    num_expert_group: 1,
    topk_group: 1,
    first_k_dense_replace: 1,
    moe_layer_freq: 1,
    tie_word_embeddings: false,
    bos_token_id: 163584,
    eos_token_id: 163586,
    linear_attn_config: {
      head_dim: 128,
      num_heads: 32,
      short_conv_kernel_size: 4,
      kda_layers: [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26],
      full_attn_layers: [4, 8, 12, 16, 20, 24, 27],
    },
  },
};

/** A published model's normalised config. */
export function publishedConfig(name: PublishedModel): ModelConfig {
  return parseModelConfig(PUBLISHED_CONFIGS[name], `${name} (published config)`);
}
