#!/usr/bin/env bash
# One device call trains both default models (see tools/train/README.md):
#   tokenizer -> evaluation set -> smoke run of both models -> both trainings in parallel -> results.tgz
# Needs .cache/train-data/corpus (python3 tools/train/data.py fetch) carried to the device:
#   run(command="bash tools/train/run_device.sh", carry=[".cache/train-data/corpus"], timeout_s=600)
# Writes to $OUT: env.txt, smoke.log, qwen35.log, kimi.log, results.tgz (models, metrics, tokenizer, eval set).
set -uo pipefail
OUT=${OUT:-/tmp/capsule-train-out}
W=${WORK:-/tmp/capsule-train}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
EVAL_BUDGET=${EVAL_BUDGET:-110}
ARCHS=${ARCHS:-"qwen35 kimi"}
# Retraining one model beside a shipped one: reuse the shipped tokenizer and evaluation set
# (TOKENIZER_DIR=models/capsule-qwen35-tiny EVAL_SET=tools/train/eval.jsonl.gz), so both models keep one
# vocabulary. SMOKE=0 skips the smoke run; TRAIN_ARGS go to every `train.py train`.
TOKENIZER_DIR=${TOKENIZER_DIR:-}
EVAL_SET=${EVAL_SET:-}
SMOKE=${SMOKE:-1}
TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T=tools/train
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

python3 $T/train.py env > "$OUT/env.txt" 2>&1; cat "$OUT/env.txt"
if [ -n "$TOKENIZER_DIR" ]; then
  stamp "tokenizer from $TOKENIZER_DIR"
  mkdir -p "$W/tokenizer" && cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$W/tokenizer/" || exit 1
  echo "reused $TOKENIZER_DIR" > "$W/tokenizer.log"
else
  stamp tokenizer
  python3 $T/train.py tokenizer --out "$W/tokenizer" 2>&1 | tee "$W/tokenizer.log" || exit 1
fi
if [ -n "$EVAL_SET" ]; then
  cp "$EVAL_SET" "$W/eval.jsonl.gz" || exit 1
else
  stamp eval set
  python3 $T/data.py eval --tokenizer "$W/tokenizer/tokenizer.json" --out "$W/eval.jsonl.gz" || exit 1
fi

ok=""
if [ "$SMOKE" = 0 ]; then
  ok=" $ARCHS"
else
stamp smoke
pids=()
for a in $ARCHS; do
  python3 $T/train.py train --arch "$a" --smoke --seconds 12 --tokens-per-step 2048 --workers 2 --log-every 5 \
    --monitor-every 6 --monitor-items 1 --tokenizer "$W/tokenizer" --eval-set "$W/eval.jsonl.gz" \
    --out "$W/smoke" > "$W/smoke-$a.log" 2>&1 &
  pids+=($!)
done
i=0
for a in $ARCHS; do
  if wait "${pids[$i]}"; then ok="$ok $a"; else stamp "smoke $a FAILED"; fi
  i=$((i + 1))
done
cat "$W"/smoke-*.log > "$OUT/smoke.log"
stamp "smoke passed:$ok"
fi
[ -n "$ok" ] || { tar czf "$OUT/results.tgz" -C "$W" .; exit 1; }

stamp train
pids=()
for a in $ok; do
  python3 $T/train.py train --arch "$a" --seconds "$TRAIN_SECONDS" --total-seconds $((TRAIN_SECONDS + 25 + EVAL_BUDGET)) \
    --tokenizer "$W/tokenizer" --eval-set "$W/eval.jsonl.gz" --out "$W/final" $TRAIN_ARGS > "$OUT/$a.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || stamp "a training exited with $?"; done
stamp finished
cp "$W/tokenizer.log" "$W/final/" 2>/dev/null
# Shipped folders, metrics and logs; the raw save_pretrained output and the weight backups only where
# the export did not finish (the 16 MiB limit on a returned file leaves no room for all of them).
extra=()
for d in "$W"/final/capsule-*-tiny; do
  [ -f "$d/model.safetensors" ] || extra+=("final/$(basename "$d").state_dict.pt")
done
tar czf "$OUT/results.tgz" -C "$W" --exclude='final/*-raw' --exclude='*.state_dict.pt' --exclude='smoke/*-tiny*' \
  tokenizer eval.jsonl.gz final $( [ -d "$W/smoke" ] && echo smoke ) ${extra[@]+"${extra[@]}"}
ls -la "$OUT"
stamp done
