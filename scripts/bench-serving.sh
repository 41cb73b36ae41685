#!/usr/bin/env bash
# Served throughput over HTTP, `epas serve` (ratios 0 and 0.5) against llama.cpp's
# `llama-server -np 16` on the same GGUF with the same threads, one server at a time, driven by
# the same closed-loop client (scripts/bench_serving.py): 128-token prompts, 128 tokens out.
# Usage: scripts/bench-serving.sh [CONCURRENCIES] [THREADS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
conc="${1:-1,4,16}"
threads="${2:-2}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
bash scripts/fetch-models.sh >/dev/null
bin="$(bash scripts/build-llamacpp.sh | tail -1)"
cargo build --release --quiet --bin epas
port=18181
wait_health() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on $port did not start" >&2; return 1
}
echo "## llama-server -np 16 -t $threads"
"$bin/llama-server" -m "$model" -t "$threads" -np 16 -c 8192 --port "$port" >/dev/null 2>&1 &
pid=$!; trap 'kill $pid 2>/dev/null || true' EXIT
wait_health
python3 scripts/bench_serving.py "http://127.0.0.1:$port" --concurrency "$conc"
kill "$pid"; wait "$pid" 2>/dev/null || true
for ratio in 0 0.5; do
  echo "## epas serve, sharing_ratio $ratio"
  EPAS_THREADS="$threads" ./target/release/epas serve --model "$model" --port "$port" \
    --allow-untrained-sharing --no-prefix-cache >/dev/null 2>&1 &
  pid=$!
  wait_health
  python3 scripts/bench_serving.py "http://127.0.0.1:$port" --concurrency "$conc" --ratio "$ratio"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
