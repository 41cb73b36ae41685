#!/usr/bin/env bash
# The cost of structured outputs (issue 20), measured with epas-loadtest on one server: R
# interleaved rounds of 16 clients sending the same SOTU prompts twice, once with a JSON Schema
# in `response_format` and once without (which goes first alternates by round). The schema asks
# for a list of at least 50 records, so neither run finishes before max_tokens: both generate 128
# tokens per request (ignore_eos), temperature 0, no prefix cache (the second run of a pair would
# otherwise reuse the first one's prompts).
# Writes target/bench-structured/: runs/*.json (one epas-loadtest report per run), all.md and
# report.md (medians of generated tok/s with and without, their ratio against the issue's
# target: constrained decoding costs at most 10%); with --write it also replaces the
# bench-structured section of BENCHMARKS.md. About 3 minutes by default on 2 quiet threads.
#
# Usage: scripts/bench-structured.sh [--write] [ROUNDS] [THREADS] [PER_CLIENT]
#        defaults: 3  2  3
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
write=0
if [ "${1:-}" = "--write" ]; then write=1; shift; fi
rounds="${1:-3}"
threads="${2:-2}"
per_client="${3:-3}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
out="target/bench-structured"
rm -rf "$out/runs"
mkdir -p "$out/runs"

bash scripts/fetch-models.sh >/dev/null
bash scripts/fetch-corpus.sh >/dev/null
cargo build --release --quiet -p epas -p epas-loadtest
loadtest=./target/release/epas-loadtest
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
server_flags=(--model "$model" --threads "$threads" --no-prefix-cache)
server_cmd=(./target/release/epas serve "${server_flags[@]}" --port "$port")
echo "== ${server_cmd[*]}" >&2
"${server_cmd[@]}" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1200); do
  curl -sf "$url/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "the server exited:" >&2; tail -5 "$out/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$url/health" >/dev/null || { echo "the server on $port did not become healthy" >&2; exit 1; }

schema='{"type": "object", "properties": {"records": {"type": "array", "minItems": 50,
  "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
  "year": {"type": "integer", "minimum": 1700, "maximum": 2100},
  "kind": {"enum": ["speech", "law", "war", "treaty"]}},
  "required": ["name", "year", "kind"], "additionalProperties": false}}},
  "required": ["records"], "additionalProperties": false}'
constrained="{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"records\", \"schema\": $schema}}}"
common=(--url "$url" --corpus data/sotu-eval.txt --prompt-tokens 128 --max-tokens 128 --ignore-eos
        --temperature 0 --timeout 600 --no-progress --concurrency 16)

# One unmeasured pass of each mode first (pages the weights in, builds the tokenizer's trie).
"$loadtest" "${common[@]}" --requests-per-client 1 >/dev/null 2>&1
"$loadtest" "${common[@]}" --requests-per-client 1 --extra-body "$constrained" >/dev/null 2>&1

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then modes=(with without); else modes=(without with); fi
  for mode in "${modes[@]}"; do
    args=("${common[@]}" --requests-per-client "$per_client" --seed "$round"
          --label "c=16 $mode schema")
    if [ "$mode" = with ]; then args+=(--extra-body "$constrained"); fi
    echo "== round $round: $mode schema" >&2
    "$loadtest" "${args[@]}" --json "$out/runs/r$round-$mode.json" >/dev/null
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
elapsed=$((SECONDS - started))

runs="$(ls "$out"/runs/*.json | paste -sd, -)"
"$loadtest" --merge "$runs" --markdown "$out/all.md" >/dev/null

epas_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || epas_rev="$epas_rev + uncommitted changes"
write_args=()
if [ "$write" = 1 ]; then write_args=(--write BENCHMARKS.md); fi
python3 scripts/structured_report.py "$out" \
  --command "bash scripts/bench-structured.sh $rounds $threads $per_client" \
  --server "epas serve ${server_flags[*]}" --revision "$epas_rev" \
  --load "$load_before / $load_after" --seconds "$elapsed" "${write_args[@]}" >"$out/report.md"
cat "$out/report.md"
echo "wrote $out/report.md$([ "$write" = 1 ] && echo ' and the bench-structured section of BENCHMARKS.md') ($elapsed s of runs)" >&2
