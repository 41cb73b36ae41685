#!/usr/bin/env bash
# Load-time quantization (`--quantize`) against the dense weights it starts from: SmolLM2-135M
# exported as an F16 GGUF (dense matrices, loaded like an HF folder's), then `epas bench`
# (prefill PROMPT / decode GEN tokens, ratio 0) for the dense weights and each FORMATS choice,
# alternating rounds, median; `epas eval` perplexity on the first 8192 tokens of
# data/sotu-eval.txt; weight MB, load seconds and peak resident MB from the load log.
# Usage: scripts/bench-quantize.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
threads="${2:-2}"
formats="${FORMATS:-q8_0 q6_k q5_k q4_k q4_1}"
prompt="${PROMPT:-512}"
gen="${GEN:-128}"
bash scripts/fetch-models.sh >/dev/null
bash scripts/fetch-corpus.sh >/dev/null
cargo build --release --quiet
dir=target/bench-quantize
mkdir -p "$dir"
model="$dir/smollm2-f16.gguf"
[ -f "$model" ] || ./target/release/epas export --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --quant f16 --out "$model" >/dev/null
configs="dense $formats"
flags() { [ "$1" = dense ] || echo "--quantize $1"; }
for r in $(seq "$rounds"); do
  for c in $configs; do
    # shellcheck disable=SC2046
    RUST_LOG=info ./target/release/epas --threads "$threads" --log-json bench --model "$model" $(flags "$c") \
      --prompt-tokens "$prompt" --gen-tokens "$gen" --ratios 0 --repeats 3 --json \
      >"$dir/$c-$r.json" 2>"$dir/$c-$r.log"
  done
done
for c in $configs; do
  # shellcheck disable=SC2046
  ./target/release/epas --threads "$threads" eval --model "$model" $(flags "$c") \
    --text data/sotu-eval.txt --max-tokens 8192 --ratios 0 --json 2>/dev/null >"$dir/$c-eval.json"
done
python3 - "$dir" "$rounds" "$threads" "$configs" "$prompt" "$gen" <<'PY'
import json, statistics, sys
d, rounds, threads, configs, prompt, gen = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(), sys.argv[5], sys.argv[6]
m = statistics.median
def log_field(path, message, field):
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("fields", {}).get("message") == message:
            return e["fields"].get(field)
    return None
rows = {}
for c in configs:
    p = m(json.load(open(f"{d}/{c}-{r}.json"))[0]["prefill_tokens_per_second"] for r in range(1, rounds + 1))
    g = m(json.load(open(f"{d}/{c}-{r}.json"))[0]["decode_tokens_per_second"] for r in range(1, rounds + 1))
    log = f"{d}/{c}-1.log"
    rows[c] = (p, g, log_field(log, "model loaded", "weight_mb"), log_field(log, "model loaded", "seconds"),
               log_field(log, "model loaded", "peak_rss_mb"), json.load(open(f"{d}/{c}-eval.json"))[0]["perplexity"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"SmolLM2-135M as an F16 GGUF (dense), {threads} threads, {cpu}; median of {rounds} alternating rounds;")
print("perplexity: first 8192 tokens of data/sotu-eval.txt, ratio 0.")
print()
print(f"| weights | prefill {prompt} tok/s | decode {gen} tok/s | vs dense (prefill / decode) | weight MB | load s | peak RSS MB | perplexity |")
print("|---|---|---|---|---|---|---|---|")
bp, bg = rows["dense"][0], rows["dense"][1]
for c in configs:
    p, g, mb, s, peak, ppl = rows[c]
    name = "dense (f16 file, f32 in memory)" if c == "dense" else f"`--quantize {c}`"
    print(f"| {name} | {p:.1f} | {g:.1f} | {p / bp:.2f}x / {g / bg:.2f}x | {mb} | {s:.2f} | {peak} | {ppl:.3f} |")
PY
