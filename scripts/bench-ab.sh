#!/usr/bin/env bash
# A/B comparison of two `epas` binaries (or one binary with two sets of serve flags), interleaved
# round by round so that machine noise hits both alike, on SmolLM2 Q4_1:
#   - single-stream decode at depth 2048 (`epas bench --prompt-tokens 2048 --decode-context 2048
#     --gen-tokens 64`, ratios 0 and 0.5);
#   - served at 16 clients (epas-loadtest, closed loop, 128-token prompts, 128 streamed tokens,
#     2 requests per client): generated tok/s, TTFT and ITL.
# Prints a Markdown table of medians over the rounds (min-max in brackets).
#
# Usage: A=path/to/epas B=path/to/epas [A_FLAGS="serve flags"] [B_FLAGS=...] \
#        scripts/bench-ab.sh [ROUNDS] [THREADS]
# A_FLAGS / B_FLAGS go to `epas serve` only (e.g. B_FLAGS="--max-prefill-while-decoding 512").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
threads="${2:-2}"
: "${A:?set A to the first epas binary}" "${B:?set B to the second epas binary}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --quiet -p epas-loadtest
out="target/bench-ab"
rm -rf "$out"
mkdir -p "$out"

serve_point() { # label binary flags round
  local label="$1" bin="$2" flags="$3" round="$4" port pid
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # shellcheck disable=SC2086
  "$bin" serve --model "$model" --threads "$threads" --port "$port" --no-prefix-cache $flags \
    >"$out/serve-$label-$round.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "server $label exited" >&2; return 1; }
    sleep 0.1
  done
  ./target/release/epas-loadtest --url "http://127.0.0.1:$port" --sweep concurrency=16 \
    --requests-per-client 2 --prompt-tokens 128 --max-tokens 128 --ignore-eos --warmup 2 \
    --timeout 600 --seed "$round" --label "$label" --json "$out/served-$label-$round.json" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  for label in A B; do
    bin="${!label}"
    flags_var="${label}_FLAGS"
    "$bin" --threads "$threads" bench --model "$model" --prompt-tokens 2048 --decode-context 2048 \
      --gen-tokens 64 --ratios 0,0.5 --repeats 1 --allow-untrained-sharing --json 2>/dev/null \
      >"$out/deep-$label-$r.json"
    serve_point "$label" "$bin" "${!flags_var:-}" "$r"
  done
done

python3 - "$out" "$rounds" "$threads" <<'PY'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cell(values, fmt="{:.1f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"
rows = {}
for label in "AB":
    deep = [json.load(open(f"{out}/deep-{label}-{r}.json")) for r in range(1, rounds + 1)]
    served = [json.load(open(f"{out}/served-{label}-{r}.json"))["runs"][0]["overall"]
              for r in range(1, rounds + 1)]
    rows[label] = {
        "decode @2048, ratio 0": [next(x for x in d if x["sharing_ratio"] == 0)["decode_tokens_per_second"] for d in deep],
        "decode @2048, ratio 0.5": [next(x for x in d if x["sharing_ratio"] == 0.5)["decode_tokens_per_second"] for d in deep],
        "c=16 generated tok/s": [s["output_throughput"] for s in served],
        "c=16 TTFT p50 ms": [s["ttft_ms"]["p50"] for s in served],
        "c=16 TTFT p99 ms": [s["ttft_ms"]["p99"] for s in served],
        "c=16 ITL p50 ms": [s["itl_ms"]["p50"] for s in served],
        "c=16 ITL p99 ms": [s["itl_ms"]["p99"] for s in served],
    }
print(f"Median of {rounds} interleaved rounds (min-max), {threads} threads, SmolLM2-135M Q4_1.\n")
print("| measure | A | B | B / A |")
print("|---|---|---|---|")
for key in rows["A"]:
    a, b = rows["A"][key], rows["B"][key]
    print(f"| {key} | {cell(a)} | {cell(b)} | {statistics.median(b) / statistics.median(a):.2f}x |")
PY
