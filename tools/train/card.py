#!/usr/bin/env python3
"""Write the model cards (README.md), loss curves (loss.svg) and docs/default-model.md from the
metrics.json files that train.py writes on the device. Pure Python, runs anywhere.

  python3 tools/train/card.py models/capsule-qwen35-tiny models/capsule-kimi-tiny
"""
from __future__ import annotations

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402

REPO = data.REPO
DEVICE = "NVIDIA H200 device machine"
RUN_COMMAND = 'run(command="bash tools/train/run_device.sh", carry=[".cache/train-data/corpus"], timeout_s=600)'

ARCH_TEXT = {
    "qwen35": {
        "title": "Qwen3.5 architecture (Gated DeltaNet + gated attention)",
        "class": "Qwen3_5ForCausalLM (trained); shipped as Qwen3_5ForConditionalGeneration layout",
        "layout": "the layout Qwen3.5 checkpoints have on the hub: `config.json` with `model_type: qwen3_5` and the "
                  "decoder's settings in `text_config`, weights named `model.language_model.*`, one "
                  "`model.safetensors` file in bf16. The model is text-only: no vision weights are shipped and "
                  "`vision_config` is a minimal placeholder that the layout requires.",
        "layers": "8 layers: Gated DeltaNet x3 : gated full attention x1 (layers 4 and 8 are attention)",
    },
    "kimi": {
        "title": "Kimi Linear architecture (KDA + MLA)",
        "class": "KimiLinearForCausalLM",
        "layout": "the layout of Moonshot's Kimi Linear checkpoints: `config.json` with `model_type: kimi_linear` "
                  "and the layer plan only in `linear_attn_config` (1-based `kda_layers` / `full_attn_layers`), "
                  "Moonshot's parameter names (`q_conv1d`, `f_a_proj`, `g_b_proj`, `kv_a_proj_with_mqa`, "
                  "dense MLP as `mlp.*`), one `model.safetensors` file in bf16.",
        "layers": "4 layers: KDA x3 : MLA (NoPE) x1, all feed-forward blocks dense "
                  "(`first_k_dense_replace` = 4, so the MoE fields of the config are unused)",
    },
}


def _fmt(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def loss_svg(series: list[tuple[str, str, list[tuple[float, float]]]], title: str,
             phases: list[tuple[float, str]] | None = None, width: int = 720, height: int = 360) -> str:
    """A line chart as SVG text: series = [(label, colour, [(x, y), ...])], x in millions of tokens."""
    left, right, top, bottom = 60, 20, 40, 50
    pts = [p for _, _, s in series for p in s if not math.isnan(p[1])]
    xmax = max(p[0] for p in pts) or 1.0
    ymax = max(p[1] for p in pts)
    ymax = math.ceil(ymax) if ymax > 1 else ymax * 1.1
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + pw * x / xmax

    def sy(y: float) -> float:
        return top + ph * (1 - y / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    for i in range(6):  # y grid
        y = ymax * i / 5
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    step = 10 ** math.floor(math.log10(xmax)) if xmax > 0 else 1
    if xmax / step < 4:
        step /= 2
    x = 0.0
    while x <= xmax + 1e-9:  # x ticks
        out.append(f'<line x1="{sx(x):.1f}" y1="{top + ph}" x2="{sx(x):.1f}" y2="{top + ph + 5}" stroke="#333"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{x:g}</text>')
        x += step
    for xpos, label in phases or []:
        out.append(f'<line x1="{sx(xpos):.1f}" y1="{top}" x2="{sx(xpos):.1f}" y2="{top + ph}" stroke="#999" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{sx(xpos) + 3:.1f}" y="{top + 12}" fill="#666" font-size="11">{label}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">training tokens (millions)</text>')
    out.append(f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2})">cross-entropy (nats/token)</text>')
    for i, (label, colour, s) in enumerate(series):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if not math.isnan(y))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>')
        ly = top + 24 + 16 * i
        out.append(f'<line x1="{width - right - 190}" y1="{ly - 4}" x2="{width - right - 170}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right - 165}" y="{ly}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _phase_marks(m: dict) -> list[tuple[float, str]]:
    marks, last, stage = [], None, None
    for h in m["history"]:
        new_stage = h.get("stage") != stage and stage is not None
        if h["seq_len"] != last or new_stage:
            marks.append((h["tokens"] / 1e6, f"stage {h['stage']}" if new_stage else f"{h['seq_len']} tok"))
            last = h["seq_len"]
        stage = h.get("stage")
    return marks


def model_svg(m: dict) -> str:
    hist = m["history"]
    series = [("all tokens", "#1f77b4", [(h["tokens"] / 1e6, h["loss"]) for h in hist]),
              ("answer tokens", "#d62728", [(h["tokens"] / 1e6, h["answer_loss"]) for h in hist])]
    return loss_svg(series, f"{m['name']}: training loss", _phase_marks(m))


def eval_table(m: dict) -> str:
    cells = m["eval"]["cells"]
    rows = ["| kind | 1k | 2k | 4k | 8k |", "|---|---|---|---|---|"]
    for kind in data.EVAL_KINDS:
        vals = []
        for d in data.EVAL_DISTANCES:
            c = cells.get(f"{kind}@{d}")
            vals.append(f"{c['accuracy'] * 100:.0f}% (n={c['n']})" if c else "not run")
        rows.append(f"| {'single-fact recall' if kind == 'recall' else 'two-hop'} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def sources() -> dict:
    path = os.path.join(data.DEFAULT_DIR, "corpus", "SOURCES.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def licence_section() -> str:
    src = sources()
    lines = ["| package | version | licence |", "|---|---|---|"]
    for p in src.get("packages", []):
        lines.append(f"| `{p['package']}` | {p['version']} | {p['license']} |")
    if len(lines) == 2:
        for k, v in data.LICENSES.items():
            lines.append(f"| `{k}` | (Debian bookworm) | {v} |")
    return "\n".join(lines)


def _hyper_line(h: dict, phases) -> str:
    return (f"curriculum by time: sequence length "
            + ", ".join(f"{L} from {int(s * 100)}%" for s, L in phases)
            + f" of the budget, {h['tokens_per_step']:,} tokens per step; AdamW (beta 0.9/0.95, weight decay "
            f"{h['weight_decay']} on matrices), peak LR {h['lr']}, {h['warmup_steps']} warm-up steps, cosine decay "
            f"over the time budget to {h['lr_floor']} x peak, gradient clip {h['clip']}; loss weight "
            f"{h['answer_weight']} on answer tokens"
            + (f" ({h['later_answer_weight']} on an answer's tokens after its first)"
               if h.get("later_answer_weight") else "")
            + f"; {int(h['plain_rate'] * 100)}% plain text, "
            f"{int(h.get('long_rate', 0.0) * 100)}% of transcripts in the long-recall shape")


def training_lines(m: dict) -> list[str]:
    """The Training section: one block per stage when the model was trained in stages."""
    first, last = m["history"][0], m["history"][-1]
    tail = m["history"][-5:]
    lines = [
        f"- {m['steps']} optimizer steps, {m['tokens'] / 1e6:.1f}M tokens, {m['train_seconds']:.0f} s of training "
        f"(time budgets, not step counts) on one NVIDIA H200"
        + (", shared with the other model's training" if not m.get("stages") else ""),
        f"- loss (per-token cross-entropy on the training batch): {first['loss']:.2f} at step 1, "
        f"**{last['loss']:.3f} at the last step** ({last['seq_len']}-token sequences; mean of the last five logged "
        f"batches {sum(x['loss'] for x in tail) / len(tail):.3f}); on answer tokens {_fmt(last['answer_loss'])}, "
        f"where {last['answer_token_acc'] * 100:.0f}% of answer tokens were the argmax",
        f"- float32 weights with TF32 matmuls, seed {m['hyper']['seed']}",
    ]
    stages = m.get("stages")
    if not stages:
        return lines + [f"- {_hyper_line(m['hyper'], m['phases'])}"]
    lines += [
        "",
        f"Trained in {len(stages)} stages, one device call each (`tools/train/stages.sh`): a call's 10-minute limit "
        "holds about 6.5 minutes of training, and each stage continues from the weights the previous one exported "
        "(bf16), with a fresh optimizer and fresh data seeds.",
        "",
        "| stage | command | steps | tokens | seconds | final loss | greedy recall@1k / 8k after it |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in stages:
        c = st["eval_cells"]
        r1, r8 = c.get("recall@1000", {}).get("accuracy"), c.get("recall@8000", {}).get("accuracy")
        lines.append(f"| {st['stage']} | `{st['command']}` | {st['steps']} | {st['tokens'] / 1e6:.0f}M | "
                     f"{st['train_seconds']:.0f} | {st['final_loss']:.3f} | "
                     f"{_fmt(r1 * 100 if r1 is not None else None, 0)}% / {_fmt(r8 * 100 if r8 is not None else None, 0)}% |")
    lines.append("")
    for st in stages:
        lines.append(f"- stage {st['stage']}: {_hyper_line(st['hyper'], st['phases'])}"
                     + (f"; from `{st['hyper']['init_from']}`" if st["hyper"].get("init_from") else "; from scratch"))
    return lines


def card(m: dict) -> str:
    a = ARCH_TEXT[m["arch"]]
    c = m["config"]
    h = m["hyper"]
    sizes = m["sizes"]
    tf = m.get("eval_teacher_forced_subset") or {}
    is_default = m["arch"] == "qwen35"
    recall_1k = m["eval"]["cells"].get("recall@1000", {}).get("accuracy")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "language: en",
        f"tags: [capsule, {m['model_type']}, linear-attention, tiny]",
        "---",
        f"# {m['name']}",
        "",
        ("Capsule's **default model** (`deno task start` serves it). " if is_default else
         "Capsule's second shipped model, for the Kimi Linear family. ")
        + f"A {m['parameters'] / 1e6:.2f}M-parameter {a['title']} decoder, trained from scratch for "
        f"{m['train_seconds'] / 60:.0f} minutes on one NVIDIA H200 with Hugging Face transformers' own model class "
        f"(`{m['class']}`, pure-PyTorch paths). It is a toy: it chats in ChatML, acknowledges facts it is told, "
        "answers questions about them (see the accuracy below), and otherwise writes fortune-cookie and "
        "Debian-FAQ-like text. It knows nothing about the world.",
        "",
        "## Architecture",
        "",
        f"- {a['layers']}",
        f"- hidden size {c['hidden_size']}, MLP {c['intermediate_size']}, vocabulary {c['vocab_size']} "
        f"(byte-level BPE), embeddings {'tied' if c['tie_word_embeddings'] else 'not tied'}",
    ]
    if m["arch"] == "qwen35":
        lines += [
            f"- Gated DeltaNet: {c['linear_num_key_heads']} key heads x {c['linear_key_head_dim']}, "
            f"{c['linear_num_value_heads']} value heads x {c['linear_value_head_dim']}, conv kernel "
            f"{c['linear_conv_kernel_dim']}",
            f"- gated attention: {c['num_attention_heads']} query heads, {c['num_key_value_heads']} KV heads, head dim "
            f"{c['head_dim']}, partial RoPE (factor {c['rope_parameters']['partial_rotary_factor']}, "
            f"theta {c['rope_parameters']['rope_theta']:.0e})",
        ]
    else:
        la = c["linear_attn_config"]
        lines += [
            f"- KDA: {la['num_heads']} heads x {la['head_dim']}, conv kernel {la['short_conv_kernel_size']}",
            f"- MLA: {c['num_attention_heads']} heads, kv_lora_rank {c['kv_lora_rank']}, qk_nope {c['qk_nope_head_dim']}, "
            f"qk_rope {c['qk_rope_head_dim']} (never rotated: NoPE), v {c['v_head_dim']}",
        ]
    lines += [
        f"- special tokens: `<|endoftext|>` = 0 (also padding), `<|im_start|>` = 1, `<|im_end|>` = 2; generation "
        "stops at `<|im_end|>` or `<|endoftext|>`; no BOS token",
        "",
        "## Files",
        "",
        f"Weights in {a['layout']}",
        "",
        f"Export: {m['export'].get('shipped_layout', m['export'].get('layout'))}.",
        "",
        "| file | bytes |",
        "|---|---|",
        *[f"| `{k}` | {v:,} |" for k, v in sizes.items()],
        "",
        "`tokenizer_config.json` carries the ChatML chat template; `metrics.json` is the full training log "
        "and the per-item evaluation results.",
        "",
        "## Training",
        "",
        *training_lines(m),
        "",
        "![training loss](loss.svg)",
        "",
        "### Data",
        "",
        "Generated on the fly by `tools/train/data.py` (seeded; see `tools/train/README.md`):",
        "",
        f"- {int(h['plain_rate'] * 100)}% plain text: fortune cookies and Debian FAQ paragraphs from Debian packages",
        f"- {100 - int(h['plain_rate'] * 100)}% synthetic agent transcripts in ChatML: facts stated by the user "
        "(names, cities, ages, codes, settings, passwords, meeting times), distractor turns (pasted text, "
        "`read_file` tool calls and their results, fortune requests), and questions about earlier facts "
        "answered with the bare value; "
        f"{int(h['two_hop_rate'] * 100)}% of facts are two-hop (a -> b and b -> c stated in separate turns, "
        "the question asks about a)",
        "- the text corpus is small (about 2.4 MB, 0.75M tokens), so the model saw it many times; the loss above "
        "is partly memorisation of it",
        "",
        "## Evaluation",
        "",
        "Greedy decoding with transformers (`generate`, `do_sample=False`) on the shipped weights, float32 "
        "arithmetic on the bf16 values; an item counts when the generated text starts with the expected answer. "
        "The evaluation set is `tools/train/eval.jsonl.gz` (160 items, 20 per cell; seed "
        f"{data.EVAL_SEED}, which training never uses; distractor text from a held-out 5% of the passages). "
        "Distance = tokens between the end of the turn stating the (first) fact and the question; other facts "
        "are stated before and in between.",
        "",
        eval_table(m),
        "",
        f"Measured by `bash tools/train/run_device.sh` (called as `{RUN_COMMAND}`) on the {DEVICE}, "
        f"{m['date']}, {m['gpu']}, torch {m['versions']['torch']}, transformers {m['versions']['transformers']}, "
        f"TF32 matmuls enabled as in training.",
        "",
    ]
    if tf:
        lines += [f"Teacher-forced exact match on a subset (every answer token the argmax given the true prefix): "
                  + ", ".join(f"{k} {v * 100:.0f}%" for k, v in tf.items()) + ".", ""]
    lines += [
        "Target of issue 8: single-fact recall at 1k tokens >= 90%. "
        + (f"**Not reached: {recall_1k * 100:.0f}%.** " if recall_1k is not None and recall_1k < 0.9 else
           "Reached. " if recall_1k is not None else "")
        + ("Typical miss: the first token of a multi-token answer is copied and the rest completed from the "
           "prior (Seoul -> Seville, blue -> black)."
           + (" Past the 4k-token training length the answers are mostly wrong."
              if m["eval"]["cells"].get("recall@8000", {}).get("accuracy", 0) < 0.5 else "")
           if m["arch"] == "qwen35" else
           "This model did not learn to recall within its budget: KDA's pure-PyTorch chunked path ran at "
           "about 80k tokens/s, so it saw fewer than half the Qwen model's steps, and its answers are "
           "plausible values of the right type, not the stated ones. It is shipped as a working Kimi "
           "Linear checkpoint with meaningful text, not as a memory model."),
        "",
        "## Limitations",
        "",
        "A few million parameters trained for minutes: it has no knowledge, repeats training text, and its "
        "recall falls off with distance as the table shows. Do not use it for anything but testing Capsule.",
        "",
        "## Licences of the training data",
        "",
        licence_section(),
        "",
        "Fortune files left out: `ascii-art`, `drugs`, `ethnic`, `men-women`, `politics`. The synthetic "
        "transcripts (names, cities, numbers, templates) are generated by `tools/train/data.py`.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "python3 tools/train/data.py fetch        # apt-get download + dpkg -x into .cache/train-data",
        (f"# then on the GPU machine (one call, both models): {RUN_COMMAND}" if not m.get("stages") else
         f"# then on the GPU machine, {len(m['stages'])} calls: see the head of tools/train/stages.sh"),
        "```",
        "",
        "`tools/train/README.md` has the recipe and the hyper-parameters.",
        "",
    ]
    return "\n".join(lines)


def docs_page(ms: list[dict]) -> str:
    out = ["# The default models", "",
           "Capsule ships two tiny checkpoints trained by `tools/train/` (issue 8) so that `deno task start` serves a "
           "model whose predictions mean something and recall can be measured. Both were trained on an NVIDIA H200 "
           "with transformers' own model classes: the Kimi one in one device call beside a first Qwen model, the "
           "shipped Qwen one later in four stages of one call each (`tools/train/stages.sh`); their cards have "
           "the details.", "",
           "| model | architecture | parameters | weights | steps | tokens | final loss | recall@1k (greedy) |",
           "|---|---|---|---|---|---|---|---|"]
    for m in ms:
        r1 = m["eval"]["cells"].get("recall@1000", {}).get("accuracy")
        out.append(f"| [`{m['name']}`](../models/{m['name']}/README.md) | {ARCH_TEXT[m['arch']]['title']} | "
                   f"{m['parameters'] / 1e6:.2f}M | {m['sizes']['model.safetensors'] / 1e6:.1f} MB bf16 | {m['steps']} | "
                   f"{m['tokens'] / 1e6:.0f}M | {m['history'][-1]['loss']:.2f} | "
                   f"{'n/a' if r1 is None else f'{r1 * 100:.0f}%'} |")
    out += ["", "![training loss of both models](default-model-loss.svg)", ""]
    for m in ms:
        out += [f"## {m['name']}: greedy accuracy by distance (transformers, {m['date']})", "", eval_table(m), ""]
    out += ["The evaluation set is `tools/train/eval.jsonl.gz`; `deno task eval` runs the same items through "
            "Capsule's engine, uninterrupted and across capsules.", ""]
    return "\n".join(out)


def main(argv: list[str]) -> None:
    ms = []
    for d in argv:
        m = json.load(open(os.path.join(d, "metrics.json")))
        ms.append(m)
        open(os.path.join(d, "loss.svg"), "w").write(model_svg(m))
        open(os.path.join(d, "README.md"), "w").write(card(m))
        print("wrote", os.path.join(d, "README.md"))
    if ms:
        colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]
        series = [(m["name"], colours[i % 3], [(h["tokens"] / 1e6, h["loss"]) for h in m["history"]])
                  for i, m in enumerate(ms)]
        open(os.path.join(REPO, "docs", "default-model-loss.svg"), "w").write(
            loss_svg(series, "Default models: training loss (all tokens)"))
        open(os.path.join(REPO, "docs", "default-model.md"), "w").write(docs_page(ms))
        print("wrote docs/default-model.md")


if __name__ == "__main__":
    main(sys.argv[1:])
