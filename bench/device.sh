#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md in one device call (about 9 minutes):
#   bash ../shared/device/prepare.sh        # here, once
#   run(command="source .device/boot.sh && bash bench/device.sh", carry=[".device"], timeout_s=600)
# Writes to $OUT (8 files, what the device tool returns at most): decode/decode.{json,md},
# decode-cpt16/decode.{json,md}, decode-t07/decode.{json,md} (temperature sampling), prefill.jsonl,
# log.txt (everything printed, the prefill-through-the-backend and upload-path tables included).
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
step 200 decode deno task bench \
  --models "qwen3.5-0.8b/1+8+32/1k+32k,qwen3.5-0.8b@int8/1+32/1k,qwen3.5-9b/1+32/1k,kimi-48b/1+32/1k+32k" \
  --seconds 0.25 --warmup 16 --chunk 8 --profile 3 --out "$OUT/decode"
step 60 decode-cpt16 deno task bench --models "qwen3.5-0.8b/1+32/1k,qwen3.5-0.8b@int8/1/1k" \
  --seconds 0.25 --warmup 16 --chunk 8 --gemv-cpt 16 --out "$OUT/decode-cpt16"
step 60 decode-t07 deno task bench --models "qwen3.5-0.8b/1+32/1k" \
  --seconds 0.25 --warmup 16 --chunk 8 --temperature 0.7 --top-p 0.9 --out "$OUT/decode-t07"
step 120 prefill deno run -A bench/prefill.ts --out "$OUT/prefill.jsonl" --budget-s 75
step 100 prefill-backend deno run -A bench/prefill_backend.ts --model qwen3.5-0.8b --tokens 4096,32768
step 40 upload deno run -A bench/upload.ts --mb 826
