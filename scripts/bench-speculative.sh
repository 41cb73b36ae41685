#!/usr/bin/env bash
# Speculative decoding by prompt lookup (issue 22), measured with epas-loadtest on one server,
# `epas serve --speculative ngram`: R interleaved rounds of
#   editing c=1, SOTU c=1, editing c=16, SOTU c=16,
# each run twice on the same server with the same prompts and seed: with drafts and with
# `"speculative": false` (which of the two goes first alternates by round). Editing prompts
# (scripts/editing_prompts.py) carry a State of the Union passage to reproduce with small
# changes; SOTU prompts are 256-token windows of data/sotu-eval.txt. 128 tokens out
# (ignore_eos), temperature 0, no prefix cache (the second run of a pair would otherwise reuse
# the first one's prompts).
# Writes target/bench-speculative/: runs/*.json (one epas-loadtest report per run), all.md
# (every run's full table), report.md (medians of generated tok/s, with/without ratios,
# acceptance rate); with --write it also replaces the bench-speculative section of
# BENCHMARKS.md (appending it the first time). About 3-4 minutes by default on 2 quiet threads.
#
# Usage: scripts/bench-speculative.sh [--write] [ROUNDS] [THREADS] [C1_REQUESTS] [C16_PER_CLIENT]
#        defaults: 3  2  16  2
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
write=0
if [ "${1:-}" = "--write" ]; then write=1; shift; fi
rounds="${1:-3}"
threads="${2:-2}"
c1_requests="${3:-16}"
c16_per_client="${4:-2}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
out="target/bench-speculative"
rm -rf "$out/runs"
mkdir -p "$out/runs"

bash scripts/fetch-models.sh >/dev/null
bash scripts/fetch-corpus.sh >/dev/null
cargo build --release --quiet -p epas -p epas-loadtest
loadtest=./target/release/epas-loadtest
python3 scripts/editing_prompts.py --corpus data/sotu-eval.txt --count 48 --seed 0 \
  >"$out/editing.jsonl"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
server_flags=(--model "$model" --threads "$threads" --speculative ngram --no-prefix-cache)
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

common=(--url "$url" --max-tokens 128 --ignore-eos --temperature 0 --timeout 600 --no-progress)
editing=(--prompts "$out/editing.jsonl")
sotu=(--corpus data/sotu-eval.txt --prompt-tokens 256)
c1=(--concurrency 1 --requests "$c1_requests")
c16=(--concurrency 16 --requests-per-client "$c16_per_client")
no_drafts=(--extra-body '{"speculative": false}')

# One unmeasured pass over both workloads first, so that the first measured run is not the
# one that pages the weights in.
"$loadtest" "${common[@]}" "${editing[@]}" --requests 2 >/dev/null 2>&1
"$loadtest" "${common[@]}" "${sotu[@]}" --requests 2 >/dev/null 2>&1

# measure ROUND WORKLOAD CLIENTS MODE: one run, its report in runs/.
measure() {
  local round="$1" workload="$2" clients="$3" mode="$4"
  local args=("${common[@]}" --seed "$round" --label "$workload c=$clients $mode")
  if [ "$workload" = editing ]; then args+=("${editing[@]}"); else args+=("${sotu[@]}"); fi
  if [ "$clients" = 1 ]; then args+=("${c1[@]}"); else args+=("${c16[@]}"); fi
  if [ "$mode" = without ]; then args+=("${no_drafts[@]}"); fi
  echo "== round $round: $workload c=$clients $mode drafts" >&2
  "$loadtest" "${args[@]}" --json "$out/runs/r$round-$workload-c$clients-$mode.json" >/dev/null
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then modes=(with without); else modes=(without with); fi
  for point in "editing 1" "sotu 1" "editing 16" "sotu 16"; do
    for mode in "${modes[@]}"; do
      # shellcheck disable=SC2086 # the point is two words on purpose
      measure "$round" $point "$mode"
    done
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
python3 scripts/speculative_report.py "$out" \
  --command "bash scripts/bench-speculative.sh $rounds $threads $c1_requests $c16_per_client" \
  --server "epas serve ${server_flags[*]}" --revision "$epas_rev" \
  --load "$load_before / $load_after" --seconds "$elapsed" "${write_args[@]}" >"$out/report.md"
cat "$out/report.md"
echo "wrote $out/report.md$([ "$write" = 1 ] && echo ' and the bench-speculative section of BENCHMARKS.md') ($elapsed s of runs)" >&2
