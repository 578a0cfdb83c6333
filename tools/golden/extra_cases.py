# Usage (on the GPU machine, whose image has torch + transformers):
#   python3 tools/golden/extra_cases.py PATH/TO/make_golden.py OUT_DIR
# Builds more golden cases than the shared fixtures hold: other sizes and head layouts, tied
# embeddings, fused-expert Qwen3.5-MoE, and longer prompts crossing many 64-token chunks.
# It reuses make_golden.py's model builder and reference recorder (everything above its SETS table),
# so the cases are produced exactly the way the shared fixtures were.
import os, sys, tarfile, traceback

MAKE_GOLDEN, OUT_DIR = sys.argv[1], sys.argv[2]
src = open(MAKE_GOLDEN).read()
prefix = src[: src.index("\nSETS = {")]
sys.argv = [MAKE_GOLDEN, OUT_DIR]  # make_golden.py reads OUT from argv[1]
exec(compile(prefix, MAKE_GOLDEN, "exec"))  # defines build, variant, Q35, QN, KL

CASES = [("golden", 23, 6), ("golden-long", 700, 5)]

SETS = {
  "extra": [
    # Qwen3.5: 3 key heads serving 6 value heads, odd head dims, 8 layers, tied embeddings.
    ("qwen3_5-wide", "qwen3_5_text",
     variant(Q35, hidden_size=96, num_hidden_layers=8, linear_num_key_heads=3, linear_num_value_heads=6,
             linear_key_head_dim=16, linear_value_head_dim=24, head_dim=48, num_attention_heads=6,
             num_key_value_heads=3, intermediate_size=160, tie_word_embeddings=True, vocab_size=300,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.25}),
     21, CASES),
    # Qwen3.5-MoE: experts stored fused (gate_up_proj / down_proj), shared expert with gate.
    ("qwen3_5_moe-tiny", "qwen3_5_moe_text",
     {k: v for k, v in variant(Q35, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=48,
                               shared_expert_intermediate_size=80).items() if k != "intermediate_size"},
     22, CASES),
    # Qwen3-Next: one key head group, top-1 routing without renormalisation.
    ("qwen3_next-narrow", "qwen3_next",
     variant(QN, linear_num_key_heads=1, linear_num_value_heads=3, num_experts_per_tok=1, norm_topk_prob=False,
             num_hidden_layers=4), 23, CASES),
    # Kimi Linear: 6 layers (KDA,KDA,MLA,KDA,KDA,MLA), two dense layers first, larger latent.
    ("kimi_linear-deep", "kimi_linear",
     variant(KL, num_hidden_layers=6, first_k_dense_replace=2, kv_lora_rank=48, qk_rope_head_dim=16,
             num_experts_per_token=3, routed_scaling_factor=2.446,
             linear_attn_config={"head_dim": 16, "num_heads": 6, "short_conv_kernel_size": 4,
                                 "kda_layers": [1, 2, 4, 5], "full_attn_layers": [3, 6]}),
     24, CASES),
  ],
}

for setname, items in SETS.items():
    root = os.path.join(OUT_DIR, "work", setname)
    for (name, mt, cfg, seed, cases) in items:
        try:
            build(name, mt, cfg, seed, cases, 0.05, root)
        except Exception:
            print("FAIL", name); traceback.print_exc()
    with tarfile.open(os.path.join(OUT_DIR, f"{setname}.tgz"), "w:gz") as tf:
        tf.add(root, arcname=setname)
print("done")
