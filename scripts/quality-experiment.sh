#!/usr/bin/env bash
# The EPAS quality experiment: the same tiny model trained twice on the same tokens, once plain
# (baseline) and once with the progressive sharing schedule, then perplexity on SOTU 2000-2021 at
# ratios 0, 0.25 and 0.5 for both (the baseline at ratios > 0 is forced sharing), and training
# tokens/s per sharing phase. Writes runs/quality/{baseline,epas}/ and runs/quality/report.md.
# Usage: scripts/quality-experiment.sh [STEPS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-400}
THREADS=${2:-1}
OUT=runs/quality
bash scripts/fetch-corpus.sh >/dev/null
if [ -z "${EPAS:-}" ]; then
  cargo build --release --bin epas >/dev/null
  EPAS=target/release/epas
fi
mkdir -p "$OUT"
COMMON=(--data data/sotu-train.txt --val-data data/sotu-eval.txt --layers 8 --hidden 128 --heads 4
        --kv-heads 2 --ffn 352 --seq-len 256 --batch-size 8 --steps "$STEPS" --lr 2e-3 --warmup 20
        --sharing-ratio 0.5 --block 1 --eval-batches 4 --log-every 50 --seed 7)
rm -rf "$OUT/baseline" "$OUT/epas"
$EPAS --threads "$THREADS" train "${COMMON[@]}" --out "$OUT/baseline" --no-epas > "$OUT/baseline.json"
$EPAS --threads "$THREADS" train "${COMMON[@]}" --out "$OUT/epas" \
  --tokenizer "$OUT/baseline/tokenizer.json" > "$OUT/epas.json"
for run in baseline epas; do
  $EPAS --threads "$THREADS" eval --model "$OUT/$run" --text data/sotu-eval.txt --ratios 0,0.25,0.5 \
    --ctx 256 --allow-untrained-sharing --json > "$OUT/$run-eval.json"
done
# Training speed per sharing depth, measured apart from the runs (interleaved full steps of the
# same shape), so the comparison is not at the mercy of what else the machine did during a run.
VOCAB=$(python3 -c "import json; print(json.load(open('$OUT/epas/config.json'))['vocab_size'])")
$EPAS --threads "$THREADS" bench-train --layers 8 --hidden 128 --heads 4 --kv-heads 2 --ffn 352 \
  --vocab-size "$VOCAB" --seq-len 256 --batch-size 8 --max-sharing-layers 4 --repeats 9 --json \
  > "$OUT/bench-train.json"
python3 scripts/quality_report.py "$OUT" > "$OUT/report.md"
cat "$OUT/report.md"
