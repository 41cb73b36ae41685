#!/usr/bin/env bash
# The EPAS quality experiment: the same tiny model trained on the same tokens three ways, for each
# seed: plain (baseline), the progressive sharing schedule (epas), and the schedule with flexible
# ratios (`--flexible`). Then perplexity on SOTU 2000-2021 at every depth from 0 to the trained 4
# of 8 layers (ratios 0, 0.125, 0.25, 0.375, 0.5; the baseline above 0 is forced sharing), and
# training tokens/s per sharing phase. All runs share one BPE (trained once). Writes
# runs/quality/{baseline,epas,flexible}-s<seed>/ and runs/quality/report.md (means and spreads
# over the seeds).
# Usage: scripts/quality-experiment.sh [STEPS] [THREADS] [SEEDS] [JOBS]
#        defaults: 400 1 "7 8 9" 1   (JOBS runs at a time, each on THREADS threads)
# EVAL_TOKENS=N scores only the first N tokens of the evaluation text (default: all of it).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-400}
THREADS=${2:-1}
SEEDS=${3:-7 8 9}
JOBS=${4:-1}
OUT=runs/quality
bash scripts/fetch-corpus.sh >/dev/null
if [ -z "${EPAS:-}" ]; then
  cargo build --release --bin epas >/dev/null
  EPAS=target/release/epas
fi
rm -rf "$OUT"
mkdir -p "$OUT"
MODEL=(--layers 8 --hidden 128 --heads 4 --kv-heads 2 --ffn 352 --seq-len 256)
DATA=(--data data/sotu-train.txt --val-data data/sotu-eval.txt)
# One BPE for every run: a one-step run trains it.
$EPAS --threads "$THREADS" train "${DATA[@]}" "${MODEL[@]}" --vocab-size 4096 --steps 1 \
  --batch-size 1 --out "$OUT/tokenizer" > /dev/null
COMMON=("${DATA[@]}" "${MODEL[@]}" --tokenizer "$OUT/tokenizer/tokenizer.json" --batch-size 8
        --steps "$STEPS" --lr 2e-3 --warmup 20 --sharing-ratio 0.5 --block 1 --eval-batches 4
        --log-every 50)
one_run() {
  local method=$1 seed=$2 flags=()
  case "$method" in
    baseline) flags=(--no-epas) ;;
    flexible) flags=(--flexible) ;;
  esac
  local dir="$OUT/$method-s$seed"
  $EPAS --threads "$THREADS" train "${COMMON[@]}" "${flags[@]}" --seed "$seed" --out "$dir" \
    > "$dir.json"
  $EPAS --threads "$THREADS" eval --model "$dir" --text data/sotu-eval.txt \
    --ratios 0,0.125,0.25,0.375,0.5 --ctx 256 --allow-untrained-sharing \
    ${EVAL_TOKENS:+--max-tokens "$EVAL_TOKENS"} --json > "$dir-eval.json"
}
export -f one_run
export EPAS THREADS OUT EVAL_TOKENS=${EVAL_TOKENS:-}
export COMMON_LINE="${COMMON[*]}"
jobs_list=()
for seed in $SEEDS; do
  for method in baseline epas flexible; do jobs_list+=("$method $seed"); done
done
printf '%s\n' "${jobs_list[@]}" | xargs -P "$JOBS" -L 1 bash -c \
  'COMMON=($COMMON_LINE); one_run "$0" "$1"'
# Training speed per sharing depth, measured apart from the runs (interleaved full steps of the
# same shape), so the comparison is not at the mercy of what else the machine did during a run.
VOCAB=$(python3 -c "import json; print(json.load(open('$OUT/tokenizer/config.json'))['vocab_size'])")
$EPAS --threads "$THREADS" bench-train --layers 8 --hidden 128 --heads 4 --kv-heads 2 --ffn 352 \
  --vocab-size "$VOCAB" --seq-len 256 --batch-size 8 --max-sharing-layers 4 --repeats 9 --json \
  > "$OUT/bench-train.json"
python3 scripts/quality_report.py "$OUT" "$STEPS" $SEEDS > "$OUT/report.md"
cat "$OUT/report.md"
