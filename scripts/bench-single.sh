#!/usr/bin/env bash
# Single-stream prefill (512 tokens), decode (128 tokens) and decode at depth 2048 (64 tokens
# after a 2048-token context, llama-bench's `tg64 @ d2048`) of `epas bench` against llama.cpp's
# `llama-bench` on the same GGUF, same threads, alternating runs so that machine noise hits both
# alike. Prints a Markdown table of medians and the ratio to llama.cpp.
# Usage: scripts/bench-single.sh [ROUNDS] [THREADS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
threads="${2:-2}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
bash scripts/fetch-models.sh >/dev/null
bin="$(bash scripts/build-llamacpp.sh | tail -1)"
cargo build --release --quiet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  "$bin/llama-bench" -m "$model" -p 512 -n 128 -t "$threads" -r 3 -o json 2>/dev/null > "$out/llama-$r.json"
  ./target/release/epas --threads "$threads" bench --model "$model" --prompt-tokens 512 \
    --gen-tokens 128 --ratios 0 --repeats 3 --json 2>/dev/null > "$out/epas-$r.json"
  "$bin/llama-bench" -m "$model" -p 0 -n 64 -d 2048 -t "$threads" -r 3 -o json 2>/dev/null > "$out/llama-deep-$r.json"
  ./target/release/epas --threads "$threads" bench --model "$model" --prompt-tokens 2048 \
    --decode-context 2048 --gen-tokens 64 --ratios 0 --repeats 3 --json 2>/dev/null > "$out/epas-deep-$r.json"
done
python3 - "$out" "$rounds" "$threads" <<'PY'
import json, statistics, sys, platform
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lp, ld, ep, ed, lk, ek = [], [], [], [], [], []
for r in range(1, rounds + 1):
    for row in json.load(open(f"{out}/llama-{r}.json")):
        (lp if row["n_prompt"] else ld).append(row["avg_ts"])
    row = json.load(open(f"{out}/epas-{r}.json"))[0]
    ep.append(row["prefill_tokens_per_second"]); ed.append(row["decode_tokens_per_second"])
    deep = json.load(open(f"{out}/llama-deep-{r}.json"))
    assert all(row.get("n_depth") == 2048 for row in deep), "this llama-bench ignores -d"
    lk.extend(row["avg_ts"] for row in deep)
    ek.append(json.load(open(f"{out}/epas-deep-{r}.json"))[0]["decode_tokens_per_second"])
m = statistics.median
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, {cpu}; median of {rounds} alternating rounds")
print()
print("| engine | prefill 512 tok/s | decode 128 tok/s | decode 64 at depth 2048 tok/s |")
print("|---|---|---|---|")
print(f"| llama.cpp llama-bench | {m(lp):.1f} | {m(ld):.1f} | {m(lk):.1f} |")
print(f"| epas bench (ratio 0) | {m(ep):.1f} | {m(ed):.1f} | {m(ek):.1f} |")
print(f"| epas / llama.cpp | {m(ep)/m(lp):.2f}x | {m(ed)/m(ld):.2f}x | {m(ek)/m(lk):.2f}x |")
PY
