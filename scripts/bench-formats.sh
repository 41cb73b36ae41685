#!/usr/bin/env bash
# Single-stream speed and perplexity per GGUF format: a model (MODEL=path or `builtin`; default
# SmolLM2-135M-Instruct Q4_1) exported by `epas export --quant F` to each format, then `epas bench` against llama.cpp's `llama-bench` on
# the same file (alternating rounds, median), and `epas eval` perplexity on the first 8192
# tokens of data/sotu-eval.txt. BASELINE_BIN=path/to/another/epas adds its numbers (e.g. a build
# from before a change) measured in the same rounds. FORMATS="q4_k q6_k" picks formats; PROMPT
# and GEN set the prefill and decode lengths (512, 128); EVAL=0 skips perplexity (for
# scripts/random_gguf.py models, whose text is noise).
# Usage: scripts/bench-formats.sh [ROUNDS] [THREADS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
threads="${2:-2}"
formats="${FORMATS:-q8_0 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0}"
prompt="${PROMPT:-512}"
gen="${GEN:-128}"
eval="${EVAL:-1}"
source_model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ "$source_model" = models/SmolLM2-135M-Instruct.Q4_1.gguf ] && bash scripts/fetch-models.sh >/dev/null
bash scripts/fetch-corpus.sh >/dev/null
bin="$(bash scripts/build-llamacpp.sh | tail -1)"
cargo build --release --quiet
baseline="${BASELINE_BIN:-}"
dir="target/bench-formats/$(basename "$source_model" .gguf)"
mkdir -p "$dir"
for f in $formats; do
  ./target/release/epas export --model "$source_model" --out "$dir/smol-$f.gguf" --quant "$f" --pure \
    >/dev/null 2>&1
done
engines="epas"
[ -n "$baseline" ] && engines="epas baseline"
run_epas() { # engine, format, round
  local exe=./target/release/epas
  [ "$1" = baseline ] && exe="$baseline"
  "$exe" --threads "$threads" bench --model "$dir/smol-$2.gguf" --prompt-tokens "$prompt" \
    --gen-tokens "$gen" --ratios 0 --repeats 3 --json 2>/dev/null >"$dir/$1-$2-$3.json"
}
for r in $(seq "$rounds"); do
  for f in $formats; do
    "$bin/llama-bench" -m "$dir/smol-$f.gguf" -p "$prompt" -n "$gen" -t "$threads" -r 3 -o json \
      2>/dev/null >"$dir/llama-$f-$r.json"
    for e in $engines; do run_epas "$e" "$f" "$r"; done
  done
done
for f in $formats; do
  for e in $engines; do
    [ "$eval" = 1 ] || continue
    exe=./target/release/epas
    [ "$e" = baseline ] && exe="$baseline"
    "$exe" --threads "$threads" eval --model "$dir/smol-$f.gguf" --text data/sotu-eval.txt \
      --max-tokens 8192 --ratios 0 --json 2>/dev/null >"$dir/$e-$f-eval.json"
  done
done
python3 - "$dir" "$rounds" "$threads" "$formats" "$engines" "$source_model" "$prompt" "$gen" "$eval" <<'PY'
import json, os, statistics, sys
d, rounds, threads, formats, engines, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(), sys.argv[5].split(), sys.argv[6]
prompt, gen, with_eval = sys.argv[7], sys.argv[8], sys.argv[9] == "1"
m = statistics.median
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"`{model}` exported per format, {threads} threads, {cpu}; median of {rounds} alternating rounds;")
if with_eval:
    print("perplexity: `epas eval`, first 8192 tokens of data/sotu-eval.txt, ratio 0.")
print()
head = f"| format | file MB | llama.cpp prefill {prompt} / decode {gen} tok/s | epas prefill / decode | epas / llama.cpp |"
sep = "|---|---|---|---|---|"
if with_eval:
    head += " epas perplexity |"
    sep += "---|"
if "baseline" in engines:
    head += " baseline prefill / decode | epas / baseline |"
    sep += "---|---|"
    if with_eval:
        head += " baseline perplexity |"
        sep += "---|"
print(head); print(sep)
for f in formats:
    lp, ld = [], []
    for r in range(1, rounds + 1):
        for row in json.load(open(f"{d}/llama-{f}-{r}.json")):
            (lp if row["n_prompt"] else ld).append(row["avg_ts"])
    speed = {}
    for e in engines:
        rows = [json.load(open(f"{d}/{e}-{f}-{r}.json"))[0] for r in range(1, rounds + 1)]
        speed[e] = (m([x["prefill_tokens_per_second"] for x in rows]),
                    m([x["decode_tokens_per_second"] for x in rows]))
    ppl = {e: json.load(open(f"{d}/{e}-{f}-eval.json"))[0]["perplexity"] for e in engines} if with_eval else {}
    mb = os.path.getsize(f"{d}/smol-{f}.gguf") / 1e6
    ep, ed = speed["epas"]
    line = (f"| {f} | {mb:.1f} | {m(lp):.1f} / {m(ld):.1f} | {ep:.1f} / {ed:.1f} | "
            f"{ep / m(lp):.2f}x / {ed / m(ld):.2f}x |")
    if with_eval:
        line += f" {ppl['epas']:.3f} |"
    if "baseline" in engines:
        bp, bd = speed["baseline"]
        line += f" {bp:.1f} / {bd:.1f} | {ep / bp:.2f}x / {ed / bd:.2f}x |"
        if with_eval:
            line += f" {ppl['baseline']:.3f} |"
    print(line)
PY
