#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md in one device call (4–5 minutes before run K split the
# gemv_chain step into one process per shape and format; not timed since):
#   bash ../shared/device/prepare.sh        # here, once
#   run(command="source .device/boot.sh && bash bench/device.sh", carry=[".device"], timeout_s=600)
# Writes to $OUT (8 files, the most a device call returns): decode/decode.{json,md},
# decode-cpt16/decode.{json,md}, gemm-sweep.jsonl, attn-sweep.jsonl, prefill.jsonl and log.txt
# (everything printed: the f16-KV and sampling rows, the prefill-through-the-backend and upload-path
# tables).
# Each step has its own time limit, so one slow or crashing step cannot take the others with it.
set -uo pipefail
OUT=${OUT:?set OUT to the folder the results go to}
log="$OUT/log.txt"
step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "=== $name exit ${PIPESTATUS[0]}" | tee -a "$log"
}
# The first bench process of a device call runs its kernels 1.4–2.5× slow (docs/benchmarks.md,
# run J): a short one goes first, and its figures are not used.
step 60 warm-up deno task bench --models "qwen3.5-0.8b/1/1k" --seconds 0.3 --warmup 8
step 200 decode deno task bench \
  --models "qwen3.5-0.8b/1+8+32/1k+32k,qwen3.5-0.8b@int8/1+32/1k,qwen3.5-9b/1+32/1k,kimi-48b/1+32/1k+32k" \
  --seconds 0.25 --warmup 16 --profile 3 --out "$OUT/decode"
# The same 0.8B rows with the f16 KV cache (RuntimeOptions.kvCache), profiled at 32k too, and Kimi's
# MLA latent cache in f16 at 32k.
step 90 decode-kv16 deno task bench --models "qwen3.5-0.8b/1+32/1k+32k,kimi-48b/1/32k" --kv-cache f16 \
  --seconds 0.25 --warmup 16 --profile 3
step 120 decode-cpt16 deno task bench --models "qwen3.5-0.8b/1+32/1k,qwen3.5-9b/1+32/1k,kimi-48b/1+32/1k" \
  --seconds 0.25 --warmup 16 --gemv-cpt 16 --out "$OUT/decode-cpt16"
# One batch-1 GEMV's cost inside a step, by layout, against the dispatch floor and a streaming read:
# one process per shape and format (later shapes of one process ran 2–5× slow, run K). It repeats
# one kernel, so it favours longer unrolled code than a step does (run K's gemvPrefetch).
for shape in qkv gate_up in_proj down out_proj lm_head; do
  for format in f16 int8; do
    step 30 "gemv-chain $shape $format" deno run -A bench/gemv_chain.ts --shapes "$shape" --formats "$format"
  done
done
# Temperature sampling: top-k 50 takes the sampler's fast path; top-p 0.9 over the synthetic model's
# nearly flat logits takes its fallback.
step 60 decode-sampling deno task bench --models "qwen3.5-0.8b/1/1k" \
  --seconds 0.25 --warmup 16 --temperature 0.7 --top-k 50
step 60 decode-topp deno task bench --models "qwen3.5-0.8b/1/1k" \
  --seconds 0.25 --warmup 16 --temperature 0.7 --top-p 0.9
# Prefill GEMM tile variants on every projection shape, then the prefill with the best of them.
step 90 gemm-sweep deno run -A bench/prefill.ts --gemm-sweep --models 0.8b,9b --out "$OUT/gemm-sweep.jsonl"
# The 0.8B model's best variant over one pass of all its projections (the first such line).
best=$(grep '"what":"gemm_sweep_best_total"' "$OUT/gemm-sweep.jsonl" | head -1 | grep -o '"variant":"[a-z0-9_]*"' | head -1 | cut -d'"' -f4)
echo "best GEMM variant: ${best:-none}" | tee -a "$log"
# Causal attention prefill tile variants (bench/prefill.ts --attn-sweep), then the prefill with the
# best GEMM and attention variants.
step 90 attn-sweep deno run -A bench/prefill.ts --attn-sweep --out "$OUT/attn-sweep.jsonl"
attn=$(grep '"what":"attn_sweep_best"' "$OUT/attn-sweep.jsonl" | head -1 | grep -o '"variant":"[a-z0-9_]*"' | head -1 | cut -d'"' -f4)
echo "best attention variant: ${attn:-none}" | tee -a "$log"
step 120 prefill deno run -A bench/prefill.ts --out "$OUT/prefill.jsonl" --budget-s 75 ${best:+--gemm $best} ${attn:+--attn $attn}
step 100 prefill-backend deno run -A bench/prefill_backend.ts --model qwen3.5-0.8b --tokens 4096,32768
step 100 prefill-backend-kv16 deno run -A bench/prefill_backend.ts --model qwen3.5-0.8b --tokens 4096,32768 --kv-cache f16
step 30 upload deno run -A bench/upload.ts --mb 826
