#!/usr/bin/env bash
# The CPU targets of issue 8, each a ratio measured side by side in one run:
#   1. single-stream decode and prefill against llama.cpp's llama-bench (scripts/bench-single.sh);
#   2. the time ratio 0.5 saves against ratio 0 for prefill and decode at context 512 and 2048,
#      next to the share of the FLOPs it skips, from the model shape (scripts/flop_share.py:
#      Wq/Wk, RoPE, Q K^T and softmax in the sharing layers; a FLOP share, not a bound on the
#      time saved, which also counts the K-cache reads and probability writes skipped);
#   3. served generated tok/s at concurrency 16 against llama-server (scripts/bench-peers.sh).
# Prints Markdown; with --write, also replaces the bench-cpu section of BENCHMARKS.md.
# Usage: scripts/bench-cpu.sh [--write] [THREADS] [REPEATS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
write=0
if [ "${1:-}" = "--write" ]; then write=1; shift; fi
threads="${1:-2}"
repeats="${2:-7}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --quiet --bin epas && cargo build --release --quiet -p epas-loadtest
out="target/bench-cpu"
mkdir -p "$out"

bash scripts/bench-single.sh 3 "$threads" > "$out/single.md"

# Ratios interleaved inside each repeat by `epas bench`; the median of the repeats is kept.
for ctx in 512 2048; do
  ./target/release/epas --threads "$threads" bench --model "$model" --prompt-tokens "$ctx" \
    --gen-tokens 64 --decode-context "$ctx" --ratios 0,0.5 --repeats "$repeats" \
    --allow-untrained-sharing --json 2>/dev/null > "$out/sharing-$ctx.json"
done

# Only c=16 and c=64 here: the sweep recorded in BENCHMARKS.md by bench-peers.sh stays as it is.
BENCH_PEERS_RECORD=0 bash scripts/bench-peers.sh 16,64 "$threads" 2 > "$out/peers.log" 2>&1

# Ratio 0 against a build without the sharing machinery (`--features no-sharing`: plans
# ignored, every layer computes Q/K), interleaved round by round.
cargo build --release --quiet --features no-sharing --bin epas
cp target/release/epas "$out/epas-no-sharing"
cargo build --release --quiet --bin epas
: > "$out/machinery.jsonl"
for _ in $(seq "$repeats"); do
  for bin in "$out/epas-no-sharing" ./target/release/epas; do
    "$bin" --threads "$threads" bench --model "$model" --prompt-tokens 512 --gen-tokens 128 \
      --ratios 0 --repeats 1 --json 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; r["bin"]=sys.argv[1]; print(json.dumps(r))' "$(basename "$bin")" \
      >> "$out/machinery.jsonl"
  done
done

python3 - "$out" "$threads" "$repeats" > "$out/report.md" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from flop_share import flop_share
out, threads, repeats = sys.argv[1], sys.argv[2], sys.argv[3]

print(f"### Single stream against llama.cpp ({threads} threads)\n")
print(open(f"{out}/single.md").read())
print(f"### Time saved by sharing ratio 0.5 against ratio 0 (forced sharing on SmolLM2, "
      f"median of {repeats} interleaved repeats)\n")
print("| phase | context | ratio 0 tok/s | ratio 0.5 tok/s | measured time saved | FLOP share saved (analytic) | measured / FLOP share |")
print("|---|---|---|---|---|---|---|")
for ctx in (512, 2048):
    rows = {r["sharing_ratio"]: r for r in json.load(open(f"{out}/sharing-{ctx}.json"))}
    for phase, key, prefill in (("prefill", "prefill_tokens_per_second", True),
                                ("decode", "decode_tokens_per_second", False)):
        a, b = rows[0.0][key], rows[0.5][key]
        saved = 1 - a / b
        an = flop_share(ctx, prefill)
        print(f"| {phase} | {ctx} | {a:.1f} | {b:.1f} | {saved:.1%} | {an:.1%} | {saved / an:.0%} |")
print()
PY
python3 - "$out" "$repeats" >> "$out/report.md" <<'PY'
import json, statistics, sys
out, repeats = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(f"{out}/machinery.jsonl")]
print(f"### Ratio 0 against a build without the sharing machinery (median of {repeats} interleaved rounds)\n")
print("`cargo build --release --features no-sharing` ignores sharing plans: every layer computes Q/K,")
print("no ordering by sharing depth, no probabilities kept. Same prompt (512) and decode (128) as above.\n")
print("| build | prefill 512 tok/s (min-max) | decode 128 tok/s (min-max) |")
print("|---|---|---|")
med = {}
for name, label in (("epas-no-sharing", "without sharing machinery"), ("epas", "epas (ratio 0)")):
    sel = [r for r in rows if r["bin"] == name]
    cells = []
    for key in ("prefill_tokens_per_second", "decode_tokens_per_second"):
        v = [r[key] for r in sel]
        med[(name, key)] = statistics.median(v)
        cells.append(f"{statistics.median(v):.1f} ({min(v):.0f}-{max(v):.0f})")
    print(f"| {label} | {cells[0]} | {cells[1]} |")
p = med[("epas", "prefill_tokens_per_second")] / med[("epas-no-sharing", "prefill_tokens_per_second")]
d = med[("epas", "decode_tokens_per_second")] / med[("epas-no-sharing", "decode_tokens_per_second")]
print(f"| epas / without | {p:.3f}x | {d:.3f}x |\n")
PY
python3 - >> "$out/report.md" <<'PY'
# Columns of the tool's table: run, load, ratio, ok, failed, req/s, out tok/s, total tok/s,
# TTFT p50, TTFT p99, ITL p50, ITL p99, ...
rows = [[c.strip() for c in l.split("|")[1:-1]] for l in open("target/bench-peers/peers.md")
        if l.startswith("| llama-server |") or l.startswith("| epas serve |")]
print("### Served against llama-server (128 in, 128 out, closed loop)\n")
print("| clients | server | ratio | output tok/s | vs llama-server | ITL p99 ms | vs llama-server |")
print("|---|---|---|---|---|---|---|")
for load in ("c=16", "c=64"):
    at = [r for r in rows if r[1] == load]
    base = next(r for r in at if r[0] == "llama-server")
    for r in at:
        tps, itl = float(r[6]), float(r[11])
        print(f"| {load[2:]} | {r[0]} | {r[2]} | {tps:.1f} | {tps / float(base[6]):.2f}x "
              f"| {itl:.1f} | {itl / float(base[11]):.2f}x |")
print("\nFull latency table: target/bench-peers/peers.md (the c=1,4,16 sweep is in the "
      "bench-peers section above).")
PY
cat "$out/report.md"
if [ "$write" = 1 ]; then
  python3 - "$out/report.md" <<'PY'
import sys, re, pathlib
report = open(sys.argv[1]).read()
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text()
section = ("<!-- bench-cpu:begin -->\n## CPU targets (issue 8): `scripts/bench-cpu.sh --write`\n\n"
           + report + "\n<!-- bench-cpu:end -->")
if "<!-- bench-cpu:begin -->" in text:
    text = re.sub(r"<!-- bench-cpu:begin -->.*?<!-- bench-cpu:end -->", lambda m: section, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n" + section + "\n"
path.write_text(text)
PY
fi
