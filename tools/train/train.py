#!/usr/bin/env python3
"""Train Capsule's default models with Hugging Face transformers' own model classes.

Sub-commands (run on the GPU machine; tools/train/run_device.sh runs them all in one call):

  env        print versions, the GPU and whether the model classes exist
  tokenizer  train the byte-level BPE tokenizer (tokenizers library) and write tokenizer.json +
             tokenizer_config.json (ChatML chat template)
  train      train one model (--arch qwen35 | kimi) for a wall-clock budget, evaluate it greedily on
             the evaluation set, and export it in the layout its family ships on the hub

The two architectures:
  qwen35  Qwen3_5ForCausalLM (model_type qwen3_5_text): 8 layers, Gated DeltaNet x3 : gated attention x1,
          exported as the multimodal hub layout (model_type qwen3_5, text_config, model.language_model.*)
  kimi    KimiLinearForCausalLM (model_type kimi_linear): 4 layers, KDA x3 : MLA (NoPE) x1, dense MLPs,
          exported with Moonshot's parameter names and a config.json carrying only linear_attn_config

Pure-PyTorch paths only (no fla / causal-conv1d). Hyper-parameters live in ARCHS and in the argument
defaults; README.md beside this file records them with the data recipe.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402  (tools/train/data.py)

VOCAB_SIZE = 2048
EOT_ID, IM_START_ID, IM_END_ID = 0, 1, 2

# Qwen2-style pre-tokenizer split: single digits, words with one leading non-letter, punctuation runs,
# newlines, other whitespace.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

ARCHS = {
    "qwen35": {
        "name": "capsule-qwen35-tiny",
        "model_type": "qwen3_5_text",
        "config": dict(
            vocab_size=VOCAB_SIZE, hidden_size=160, intermediate_size=320, num_hidden_layers=8,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            linear_conv_kernel_dim=4, linear_key_head_dim=32, linear_value_head_dim=32,
            linear_num_key_heads=2, linear_num_value_heads=4, rms_norm_eps=1e-6,
            tie_word_embeddings=True, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25},
            bos_token_id=None, eos_token_id=[IM_END_ID, EOT_ID], pad_token_id=EOT_ID,
        ),
    },
    "kimi": {
        "name": "capsule-kimi-tiny",
        "model_type": "kimi_linear",
        "config": dict(
            vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=64,
            q_lora_rank=None, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, mla_use_nope=True,
            # The MoE fields must be present in a kimi_linear config; with first_k_dense_replace equal to
            # the layer count every layer uses the dense MLP, so no expert weights exist.
            num_experts=8, num_experts_per_token=2, num_shared_experts=1, moe_renormalize=True,
            moe_router_activation_func="sigmoid", routed_scaling_factor=2.0, first_k_dense_replace=4,
            rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=None, eos_token_id=[IM_END_ID, EOT_ID], pad_token_id=EOT_ID,
            linear_attn_config={"head_dim": 32, "num_heads": 4, "short_conv_kernel_size": 4,
                                "kda_layers": [1, 2, 3], "full_attn_layers": [4]},
        ),
    },
}

# Curriculum: (fraction of the time budget where the phase starts, sequence length).
PHASES = ((0.0, 512), (0.15, 1024), (0.40, 2048), (0.85, 4096))
SMOKE_PHASES = ((0.0, 128), (0.5, 256))


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ---------------------------------------------------------------------------------------------
# env

def cmd_env(_args) -> None:
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.cuda.is_available()}
    try:
        import tokenizers
        info["tokenizers"] = tokenizers.__version__
    except ImportError as e:
        info["tokenizers"] = f"missing: {e}"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for mod, cls in (("qwen3_5", "Qwen3_5ForCausalLM"), ("qwen3_5", "Qwen3_5ForConditionalGeneration"),
                     ("kimi_linear", "KimiLinearForCausalLM")):
        try:
            m = __import__(f"transformers.models.{mod}", fromlist=[cls])
            info[cls] = hasattr(m, cls)
        except Exception as e:  # noqa: BLE001
            info[cls] = f"error: {e}"
    for pkg in ("fla", "causal_conv1d", "kernels", "matplotlib"):
        try:
            __import__(pkg)
            info[pkg] = "installed"
        except Exception:  # noqa: BLE001
            info[pkg] = "absent"
    print(json.dumps(info, indent=1))


# ---------------------------------------------------------------------------------------------
# tokenizer

def tokenizer_config() -> dict:
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, t in enumerate(data.SPECIAL_TOKENS)}
    return {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": [data.IM_START, data.IM_END], "bos_token": None,
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": data.IM_END,
        "errors": "replace", "model_max_length": 32768, "pad_token": data.EOT, "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": None,
    }


def cmd_tokenizer(args) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    corpus = data.Corpus.load(args.data_dir)
    rng = random.Random(f"{args.seed}/tokenizer")
    texts = list(corpus.train)
    texts += [data.training_transcript(rng, corpus, 3000).text for _ in range(args.transcripts)]
    rng.shuffle(texts)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=data.SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.time()
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert [tok.token_to_id(t) for t in data.SPECIAL_TOKENS] == [EOT_ID, IM_START_ID, IM_END_ID]
    if tok.get_vocab_size() != VOCAB_SIZE:  # the model keeps VOCAB_SIZE rows either way
        log(f"warning: tokenizer has {tok.get_vocab_size()} tokens, the models {VOCAB_SIZE} rows")
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    json.dump(tokenizer_config(), open(os.path.join(args.out, "tokenizer_config.json"), "w"), indent=2)
    sample = "".join(texts[:200])
    n = len(tok.encode(sample).ids)
    log(f"tokenizer: vocab {tok.get_vocab_size()}, trained on {len(texts)} texts in {time.time() - t0:.1f}s, "
        f"{len(sample) / n:.2f} chars/token")
    # The transformers wrapper must load it and render the chat template the way training text looks.
    # Token ids for a few texts, to check other tokenizer implementations (the engine's) against.
    checks = [data.training_transcript(random.Random(f"check{i}"), corpus, 1500).text for i in range(3)]
    checks.append("Ünïcödé — “quotes” 日本語 emoji 🙂 tabs\tand  spaces\n\n  indented 12345 3.14")
    json.dump([{"text": c, "ids": tok.encode(c, add_special_tokens=False).ids} for c in checks],
              open(os.path.join(args.out, "check.json"), "w"), ensure_ascii=False)
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(args.out)
        chat = hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                      add_generation_prompt=True)
        want = data.msg("user", "Hi") + "<|im_start|>assistant\n"
        probe = data.msg("user", "The code of the red door is 4821.") + "<|im_start|>assistant\n4821"
        same = hf(probe, add_special_tokens=False)["input_ids"] == tok.encode(probe, add_special_tokens=False).ids
        log(f"AutoTokenizer: class {type(hf).__name__}, chat template ok: {chat == want}, ids agree: {same}, "
            f"eos {hf.eos_token!r}")
    except Exception as e:  # noqa: BLE001  (a check only: training reads tokenizer.json directly)
        log(f"AutoTokenizer check failed: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# data stream

def make_stream(tok_path: str, data_dir: str, seq_len: int, seed: str, answer_weight: float,
                plain_rate: float, two_hop_rate: float, long_rate: float, later_weight: float):
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class Stream(IterableDataset):
        """Endless fixed-length samples: (input ids, target ids, per-target loss weight)."""

        def __iter__(self):
            from tokenizers import Tokenizer

            info = get_worker_info()
            wid = info.id if info is not None else 0
            rng = random.Random(f"{seed}/worker{wid}")
            tok = Tokenizer.from_file(tok_path)
            corpus = data.Corpus.load(data_dir)
            cpt = 3.2  # characters per token, re-estimated as samples go by
            need = seq_len + 1
            while True:
                smp = data.training_sample(rng, corpus, int(need * cpt * 1.05), plain_rate, two_hop_rate,
                                           long_rate)
                enc = tok.encode(smp.text, add_special_tokens=False)
                ids, offs = list(enc.ids), enc.offsets
                if ids:
                    cpt = 0.9 * cpt + 0.1 * len(smp.text) / len(ids)
                w = data.answer_weights(offs, smp.answers, answer_weight, later_weight)
                # Cutting the end never separates an answer from its fact (facts come first);
                # a short sample is topped up with plain text after <|endoftext|>.
                while len(ids) < need:
                    extra = tok.encode(rng.choice(corpus.train), add_special_tokens=False).ids
                    ids += [EOT_ID] + extra
                    w += [1.0] * (1 + len(extra))
                ids, w = ids[:need], w[:need]
                yield (torch.tensor(ids[:-1], dtype=torch.long), torch.tensor(ids[1:], dtype=torch.long),
                       torch.tensor(w[1:], dtype=torch.float32))

    return Stream()


# ---------------------------------------------------------------------------------------------
# model

def build_model(arch: str, seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = ARCHS[arch]
    config = AutoConfig.for_model(spec["model_type"], **spec["config"])
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    except (TypeError, ValueError) as e:
        log(f"from_config with sdpa failed ({e}); using the default attention")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if bool(spec["config"]["tie_word_embeddings"]) != tied:
        raise SystemExit(f"{arch}: tie_word_embeddings={spec['config']['tie_word_embeddings']} but tied={tied}")
    return model


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_items(tok, items: list[dict]) -> list[dict]:
    out = []
    for it in items:
        p = tok.encode(it["prompt"], add_special_tokens=False).ids
        a = tok.encode(it["answer"], add_special_tokens=False).ids
        out.append({**it, "prompt_ids": p, "answer_ids": a})
    return out


def teacher_forced(model, items: list[dict], device) -> dict:
    """Exact-match rate when every answer token is the argmax given the true prefix (= greedy prefix)."""
    import torch

    hits: dict[str, list[int]] = {}
    model.eval()
    with torch.no_grad():
        for it in items:
            ids = torch.tensor([it["prompt_ids"] + it["answer_ids"]], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0]
            n, m = len(it["prompt_ids"]), len(it["answer_ids"])
            pred = logits[n - 1:n - 1 + m].argmax(-1).tolist()
            hits.setdefault(f"{it['kind']}@{it['distance']}", []).append(int(pred == it["answer_ids"]))
    model.train()
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


def greedy_eval(model, tok, items: list[dict], device, deadline: float) -> dict:
    """Greedy generation with transformers' generate(); an item counts when the text starts with the answer."""
    import torch

    model.eval()
    cells: dict[str, list[int]] = {}
    details = []
    with torch.no_grad():
        for it in items:
            if time.time() > deadline:
                break
            ids = torch.tensor([it["prompt_ids"]], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=len(it["answer_ids"]) + 3, eos_token_id=[IM_END_ID, EOT_ID],
                                 pad_token_id=EOT_ID)
            new = out[0, ids.shape[1]:].tolist()
            text = tok.decode(new, skip_special_tokens=False)
            ok = text.startswith(it["answer"])
            cells.setdefault(f"{it['kind']}@{it['distance']}", []).append(int(ok))
            details.append({"id": it["id"], "prompt_tokens": len(it["prompt_ids"]),
                            "distance_tokens": it.get("distance_tokens"), "answer": it["answer"],
                            "generated": text[:60], "ok": ok})
    summary = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(cells.items())}
    return {"cells": summary, "items": details}


# ---------------------------------------------------------------------------------------------
# export in the hub layout

def read_safetensors(path: str) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype, shape, raw little-endian bytes). Pure Python: an 8-byte header length, a JSON
    header, then the data; no conversion, so bf16 values pass through bit for bit."""
    import struct

    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    body = blob[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def write_safetensors(tensors: dict[str, tuple[str, list[int], bytes]], path: str) -> None:
    import struct

    header, offset = {}, 0
    for k in sorted(tensors):
        dtype, shape, raw = tensors[k]
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for k in sorted(tensors):
            f.write(tensors[k][2])


def hub_layout(arch: str, raw_dir: str, hub_dir: str) -> list[str]:
    """Rewrite transformers' save_pretrained output into the layout of the family's hub checkpoints."""
    os.makedirs(hub_dir, exist_ok=True)
    cfg = json.load(open(os.path.join(raw_dir, "config.json")))
    files = [f for f in os.listdir(raw_dir) if f.endswith(".safetensors")]
    tensors: dict = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(raw_dir, f)))
    notes = []
    if arch == "qwen35":
        # Qwen3.5 ships as Qwen3_5ForConditionalGeneration: text weights under model.language_model.*,
        # the text config nested in text_config. This model is text-only: no vision weights are shipped
        # and vision_config is a minimal placeholder.
        out = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in tensors.items()}
        text = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")}
        cfg = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
               "tie_word_embeddings": cfg.get("tie_word_embeddings", False), "dtype": cfg.get("dtype", "bfloat16"),
               "text_config": text,
               "vision_config": {"model_type": "qwen3_5_vision", "depth": 1, "hidden_size": 32,
                                 "intermediate_size": 64, "num_heads": 2, "out_hidden_size": text["hidden_size"],
                                 "num_position_embeddings": 16},
               "transformers_version": cfg.get("transformers_version")}
        notes.append("keys model.* -> model.language_model.*; config wrapped in text_config")
    elif arch == "kimi":
        out = {}
        for k, v in tensors.items():
            k2 = re.sub(r"^(model\.layers\.\d+)\.block_sparse_moe\.(gate_proj|up_proj|down_proj)\.", r"\1.mlp.\2.", k)
            if k2 != k and not notes:
                notes.append("dense MLP keys block_sparse_moe.* -> mlp.*")
            out[k2] = v
        derived = ("layer_types", "mlp_layer_types", "linear_head_dim", "linear_num_heads", "linear_conv_kernel_dim",
                   "qk_head_dim", "head_dim")
        neutral = {"mla_use_output_gate": False, "attn_res_block_size": 0, "activation_situ_beta": 1.0,
                   "activation_situ_linear_beta": 1.0, "dense_ffn_hidden": cfg.get("intermediate_size")}
        dropped = [k for k in derived if k in cfg] + [k for k, v in neutral.items() if k in cfg and cfg[k] == v]
        for k in dropped:
            cfg.pop(k)
        cfg.setdefault("first_k_dense_replace", ARCHS["kimi"]["config"]["first_k_dense_replace"])
        cfg["moe_layer_freq"] = 1
        notes.append("dropped derived config fields: " + ", ".join(dropped))
    else:
        raise ValueError(arch)
    write_safetensors(out, os.path.join(hub_dir, "model.safetensors"))
    json.dump(cfg, open(os.path.join(hub_dir, "config.json"), "w"), indent=2)
    shutil.copy(os.path.join(raw_dir, "generation_config.json"), os.path.join(hub_dir, "generation_config.json"))
    return notes


def load_for_eval(path: str, arch: str):
    """Load a saved folder with transformers, float32 compute on the stored bf16 values."""
    import torch
    from transformers import AutoModelForCausalLM

    errors = []
    loaders = [("AutoModelForCausalLM", AutoModelForCausalLM)]
    if arch == "qwen35":
        from transformers.models.qwen3_5 import Qwen3_5ForConditionalGeneration
        loaders.append(("Qwen3_5ForConditionalGeneration", Qwen3_5ForConditionalGeneration))
    for name, cls in loaders:
        try:
            model, info = cls.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
            missing = [k for k in info.get("missing_keys", []) if "visual" not in k]
            unexpected = list(info.get("unexpected_keys", []))
            if missing or unexpected:
                errors.append(f"{name}: missing {missing[:5]} unexpected {unexpected[:5]}")
                continue
            return model, name, errors
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
    return None, None, errors


# ---------------------------------------------------------------------------------------------
# train

def load_shipped_weights(model, path: str) -> None:
    """Start from a shipped checkpoint (hub layout, bf16): the second stage of a training that a
    single device call's time limit cannot hold."""
    import torch

    tensors = read_safetensors(path)
    if any(k.startswith("model.language_model.") for k in tensors):
        tensors = {"model." + k[len("model.language_model."):] if k.startswith("model.language_model.") else k: v
                   for k, v in tensors.items()}
    sd = {}
    for k, (dtype, shape, raw) in tensors.items():
        if dtype != "BF16":
            raise SystemExit(f"{path}: {k} is {dtype}, expected BF16")
        sd[k] = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(shape).float()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise SystemExit(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def parse_phases(text: str) -> tuple[tuple[float, int], ...]:
    """"0:512,0.1:1024" -> ((0.0, 512), (0.1, 1024)): curriculum phases as start fraction:length."""
    phases = tuple((float(a), int(b)) for a, b in (p.split(":") for p in text.split(",")))
    if not phases or phases[0][0] != 0.0 or list(phases) != sorted(phases):
        raise SystemExit(f"--phases {text!r}: start at 0 and increase")
    return phases


def lr_at(step: int, frac: float, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return floor * peak + (1 - floor) * peak * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def cmd_train(args) -> None:
    import torch
    import torch.nn.functional as F
    import transformers
    from tokenizers import Tokenizer
    from torch.utils.data import DataLoader

    t_start = time.time()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = ARCHS[args.arch]
    out_dir = os.path.join(args.out, spec["name"])
    os.makedirs(out_dir, exist_ok=True)
    tok_json = os.path.join(args.tokenizer, "tokenizer.json")
    tok = Tokenizer.from_file(tok_json)
    corpus = data.Corpus.load(args.data_dir)

    model = build_model(args.arch, args.seed)
    if args.init_from:
        load_shipped_weights(model, args.init_from)
        log(f"initialised from {args.init_from} (stage {args.stage})")
    model = model.to(device)
    n_params = param_count(model)
    log(f"{args.arch}: {type(model).__name__}, {n_params:,} parameters, layer types "
        f"{getattr(model.config, 'layer_types', None)}")

    # A few held-out items (a seed that is neither the training nor the evaluation seed) to watch
    # recall while training.
    mrng = random.Random(f"{data.EVAL_SEED + 1}/monitor")
    counter = lambda s: len(tok.encode(s, add_special_tokens=False).ids)  # noqa: E731
    monitor = encode_items(tok, [data.eval_item(mrng, corpus, k, d, counter)
                                 for k in data.EVAL_KINDS for d in ((300, 1000) if args.smoke else (1000, 2000))
                                 for _ in range(args.monitor_items)])

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "conv1d" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if device.type == "cuda" else {}))
    phases = SMOKE_PHASES if args.smoke else parse_phases(args.phases) if args.phases else PHASES
    history, monitor_log = [], []
    step, tokens, phase_idx, it = 0, 0, -1, None
    seconds = args.seconds
    t0 = time.time()
    last_monitor = t0
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16)
    model.train()
    while True:
        now = time.time()
        frac = (now - t0) / seconds
        if frac >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        want = max(i for i, (start, _) in enumerate(phases) if frac >= start)
        if want != phase_idx:
            phase_idx = want
            seq_len = phases[phase_idx][1]
            batch = max(1, args.tokens_per_step // seq_len)
            # Stage 1 keeps the seed strings of the first release; later stages draw fresh data.
            stage = "" if args.stage == 1 else f"stage{args.stage}/"
            stream = make_stream(tok_json, args.data_dir, seq_len, f"{args.seed}/{args.arch}/{stage}phase{phase_idx}",
                                 args.answer_weight, args.plain_rate, args.two_hop_rate, args.long_rate,
                                 args.later_answer_weight if args.later_answer_weight > 0 else args.answer_weight)
            it = None  # let the old workers go before starting new ones
            it = iter(DataLoader(stream, batch_size=batch, num_workers=args.workers, pin_memory=True,
                                 prefetch_factor=4 if args.workers else None))
            log(f"phase {phase_idx}: seq_len {seq_len}, batch {batch} at step {step}, {now - t0:.0f}s")
        x, y, w = (t.to(device, non_blocking=True) for t in next(it))
        lr = lr_at(step, frac, args.lr, args.warmup_steps, args.lr_floor)
        for g in opt.param_groups:
            g["lr"] = lr
        with amp:
            logits = model(input_ids=x, use_cache=False).logits
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        wf = w.reshape(-1)
        loss = (ce * wf).sum() / wf.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        tokens += x.numel()
        if step % args.log_every == 0 or step == 1:
            with torch.no_grad():
                ans = wf > 1.0
                n_ans = int(ans.sum())
                ans_loss = float(ce[ans].mean()) if n_ans else float("nan")
                ans_acc = float((logits.reshape(-1, logits.shape[-1]).argmax(-1)[ans] == y.reshape(-1)[ans])
                                .float().mean()) if n_ans else float("nan")
                rec = {"step": step, "seconds": round(time.time() - t0, 1), "tokens": tokens, "seq_len": x.shape[1],
                       "lr": lr, "loss": float(ce.mean()), "weighted_loss": float(loss), "answer_loss": ans_loss,
                       "answer_token_acc": ans_acc, "grad_norm": float(gnorm)}
            history.append(rec)
            log(f"step {step} {rec['seconds']}s L={x.shape[1]} loss {rec['loss']:.3f} ans_loss {ans_loss:.3f} "
                f"ans_acc {ans_acc:.3f} gn {rec['grad_norm']:.2f} lr {lr:.2e} tok/s {tokens / (time.time() - t0):,.0f}")
        if time.time() - last_monitor > args.monitor_every:
            last_monitor = time.time()
            acc = teacher_forced(model, monitor, device)
            monitor_log.append({"step": step, "seconds": round(time.time() - t0, 1), "accuracy": acc})
            log(f"monitor step {step}: {acc}")
    it = None
    train_seconds = time.time() - t0
    final_loss = history[-1]["loss"] if history else float("nan")
    log(f"trained {step} steps, {tokens:,} tokens in {train_seconds:.0f}s")

    # A plain backup of the weights first, so that an error below cannot lose the training run.
    torch.save({k: v.detach().to("cpu", torch.bfloat16) for k, v in model.state_dict().items()},
               os.path.join(args.out, spec["name"] + ".state_dict.pt"))
    metrics = {
        "arch": args.arch, "name": spec["name"], "class": type(model).__name__, "parameters": n_params,
        "config": spec["config"], "model_type": spec["model_type"],
        "hyper": {k: getattr(args, k) for k in ("seed", "seconds", "tokens_per_step", "lr", "lr_floor", "warmup_steps",
                                                "weight_decay", "clip", "answer_weight", "plain_rate",
                                                "two_hop_rate", "long_rate", "later_answer_weight", "bf16", "workers", "stage",
                                                "init_from")},
        "phases": phases, "steps": step, "tokens": tokens, "train_seconds": round(train_seconds, 1),
        "final_loss": final_loss, "history": history, "monitor": monitor_log,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "smoke": bool(args.smoke),
    }
    metrics_path = os.path.join(args.out, spec["name"] + ".metrics.json")
    json.dump(metrics, open(metrics_path, "w"), indent=1)
    try:
        export_and_evaluate(args, spec, model, tok, monitor, device, t_start, out_dir, metrics)
    finally:
        json.dump(metrics, open(metrics_path, "w"), indent=1)
    log(f"done: {spec['name']} {metrics.get('sizes')}")


def export_and_evaluate(args, spec, model, tok, monitor, device, t_start, out_dir, metrics) -> None:
    import torch

    # Export: transformers' own save_pretrained (bf16), then the hub layout, then reload and compare.
    # Verification and evaluation run in plain float32 (no TF32), the reference arithmetic.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    raw_dir = os.path.join(args.out, spec["name"] + "-raw")
    model.eval()
    model.generation_config.eos_token_id = [IM_END_ID, EOT_ID]
    model.generation_config.pad_token_id = EOT_ID
    model.generation_config.bos_token_id = None
    model_bf16 = model.to(torch.bfloat16)
    try:
        model_bf16.save_pretrained(raw_dir, safe_serialization=True)
    except Exception as e:  # noqa: BLE001  (newer transformers always write safetensors, without the flag)
        log(f"save_pretrained(safe_serialization=True): {type(e).__name__}: {e}; saving without the flag")
        model_bf16.save_pretrained(raw_dir)
    # The reference is transformers' own save loaded back, not the in-memory module: .to(bfloat16) also
    # rounds float buffers such as the RoPE inverse frequencies, which a fresh load recomputes in float32.
    ref, _, ref_errors = load_for_eval(raw_dir, args.arch)
    if ref is None:
        log(f"raw save did not load back ({ref_errors}); comparing with the in-memory model")
        ref = model_bf16.float()
    ref = ref.to(device).eval()
    notes = hub_layout(args.arch, raw_dir, out_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.tokenizer, f), os.path.join(out_dir, f))
    probe = torch.tensor([monitor[0]["prompt_ids"][:300]], device=device)
    with torch.no_grad():
        want = ref(input_ids=probe, use_cache=False).logits.float()
    verify = {"notes": notes}
    shipped, loader, errors = load_for_eval(out_dir, args.arch)
    layout = "hub"
    if shipped is not None:
        shipped = shipped.to(device).eval()
        with torch.no_grad():
            got = shipped(input_ids=probe, use_cache=False).logits.float()
        verify["max_abs_logit_diff"] = float((got - want).abs().max())
    if shipped is None or verify.get("max_abs_logit_diff", 1.0) > 1e-3:
        # The hub rewrite did not load back identically: ship transformers' own layout instead.
        log(f"hub layout failed verification ({errors}, {verify.get('max_abs_logit_diff')}); shipping raw layout")
        layout = "raw"
        for f in os.listdir(raw_dir):
            shutil.copy(os.path.join(raw_dir, f), os.path.join(out_dir, f))
        shipped, loader, errors2 = load_for_eval(out_dir, args.arch)
        errors += errors2
        shipped = (shipped if shipped is not None else ref).to(device).eval()
    verify.update({"layout": layout, "loaded_with": loader, "load_errors": errors})
    log(f"export: {verify}")

    # Final evaluation: greedy generation with transformers on the shipped checkpoint.
    eval_items = encode_items(tok, data.read_jsonl(args.eval_set))
    # Round-robin over the (kind, distance) cells, so that a deadline cuts every cell alike.
    eval_items.sort(key=lambda x: (int(x["id"].rsplit("-", 1)[1]), x["kind"], x["distance"]))
    if args.smoke:
        eval_items = [x for x in eval_items if x["id"].endswith("-00") and x["distance"] <= 2000]
    deadline = t_start + args.total_seconds if args.total_seconds else float("inf")
    t_eval = time.time()
    result = greedy_eval(shipped, tok, eval_items, device, deadline)
    eval_seconds = time.time() - t_eval
    log(f"greedy eval ({eval_seconds:.0f}s): {json.dumps(result['cells'])}")
    subset = [x for x in eval_items if x["distance"] <= 4000][::4]
    tf = teacher_forced(shipped, subset, device) if time.time() < deadline else {}

    metrics.update({"eval": result, "eval_seconds": round(eval_seconds, 1), "eval_teacher_forced_subset": tf,
                    "export": verify,
                    "sizes": {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}})


def cmd_hubify(args) -> None:
    """Rewrite a save_pretrained folder into the hub layout (pure Python, no torch needed)."""
    notes = hub_layout(args.arch, args.raw, args.out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(args.tokenizer or args.raw, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, f))
    log(f"hub layout written to {args.out}: {notes}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    t = sub.add_parser("tokenizer")
    t.add_argument("--out", required=True)
    t.add_argument("--data-dir", default=data.DEFAULT_DIR)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--transcripts", type=int, default=1500)
    r = sub.add_parser("train")
    r.add_argument("--arch", choices=sorted(ARCHS), required=True)
    r.add_argument("--tokenizer", required=True, help="folder with tokenizer.json and tokenizer_config.json")
    r.add_argument("--eval-set", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--data-dir", default=data.DEFAULT_DIR)
    r.add_argument("--seed", type=int, default=1234)
    r.add_argument("--seconds", type=float, default=330.0, help="wall-clock training budget")
    r.add_argument("--total-seconds", type=float, default=0.0, help="stop evaluating after this (0: no limit)")
    r.add_argument("--max-steps", type=int, default=0)
    r.add_argument("--tokens-per-step", type=int, default=49152)
    r.add_argument("--lr", type=float, default=3e-3)
    r.add_argument("--lr-floor", type=float, default=0.1)
    r.add_argument("--warmup-steps", type=int, default=50)
    r.add_argument("--weight-decay", type=float, default=0.1)
    r.add_argument("--clip", type=float, default=1.0)
    r.add_argument("--answer-weight", type=float, default=5.0)
    r.add_argument("--later-answer-weight", type=float, default=0.0,
                   help="loss weight of answer tokens after an answer's first (0: --answer-weight); the "
                        "shipped model's misses copy the first token and guess the rest")
    r.add_argument("--plain-rate", type=float, default=0.2)
    r.add_argument("--two-hop-rate", type=float, default=0.3)
    r.add_argument("--long-rate", type=float, default=0.0,
                   help="share of transcripts in the long-recall shape (facts first, questions last)")
    r.add_argument("--init-from", default="", help="model.safetensors of a shipped model to continue from")
    r.add_argument("--stage", type=int, default=1, help="training stage (seeds the data of stages after 1)")
    r.add_argument("--phases", default="", help="curriculum as start:seq_len pairs, e.g. 0:512,0.1:1024")
    r.add_argument("--bf16", action="store_true", help="bf16 autocast (default: float32 with TF32 matmuls)")
    r.add_argument("--workers", type=int, default=6)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--monitor-every", type=float, default=45.0)
    r.add_argument("--monitor-items", type=int, default=8)
    r.add_argument("--smoke", action="store_true", help="tiny sequences and a 2-item evaluation")
    h = sub.add_parser("hubify", help="rewrite a save_pretrained folder into the hub layout")
    h.add_argument("--arch", choices=sorted(ARCHS), required=True)
    h.add_argument("--raw", required=True)
    h.add_argument("--out", required=True)
    h.add_argument("--tokenizer", help="folder with tokenizer.json and tokenizer_config.json (default: --raw)")
    a = ap.parse_args(argv)
    {"env": cmd_env, "tokenizer": cmd_tokenizer, "train": cmd_train, "hubify": cmd_hubify}[a.cmd](a)


if __name__ == "__main__":
    main()
