#!/usr/bin/env bash
# Served throughput and latency of `epas serve` (sharing ratios 0 and 0.5) against llama.cpp's
# `llama-server` on the same SmolLM2 GGUF with the same threads, one server at a time, both
# driven by the same `epas-loadtest` settings: closed loop at each concurrency, synthetic
# 128-token prompts, 128 streamed tokens with ignore_eos, a warm-up of 2 requests.
# Writes target/bench-peers/{llama-server,epas,peers}.json, peers.md, the chart
# docs/bench-peers.png, and replaces the section between the bench-peers markers of
# BENCHMARKS.md (appending it the first time). With BENCH_PEERS_RECORD=0 it writes only
# target/bench-peers/ (the chart as target/bench-peers/peers.png): other benchmarks call it so.
#
# Usage: scripts/bench-peers.sh [CONCURRENCIES] [THREADS] [REQUESTS_PER_CLIENT]
#        defaults: 1,4,16  2  2
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
conc="${1:-1,4,16}"
threads="${2:-2}"
per_client="${3:-2}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
out="target/bench-peers"
record="${BENCH_PEERS_RECORD:-1}"
chart="docs/bench-peers.png"
[ "$record" = 1 ] || chart="$out/peers.png"
mkdir -p "$out" "$(dirname "$chart")"

bash scripts/fetch-models.sh >/dev/null
llama_bin="$(bash scripts/build-llamacpp.sh | tail -1)"
cargo build --release --quiet -p epas -p epas-loadtest
loadtest=./target/release/epas-loadtest
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
pid=""
stop_server() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap stop_server EXIT
wait_health() {
  for _ in $(seq 1200); do
    curl -sf "$url/health" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "the server exited" >&2; return 1; }
    sleep 0.1
  done
  echo "the server on $port did not become healthy" >&2
  return 1
}

# The same load for both servers (the model name is each server's own, from /v1/models).
common=(--url "$url" --sweep "concurrency=$conc" --requests-per-client "$per_client"
  --prompt-tokens 128 --max-tokens 128 --ignore-eos --warmup 2 --timeout 600 --seed 0)

llama_cmd=("$llama_bin/llama-server" -m "$model" -t "$threads" -np 16 -c 8192 --port "$port")
echo "== ${llama_cmd[*]}" >&2
"${llama_cmd[@]}" >"$out/llama-server.log" 2>&1 &
pid=$!
wait_health
"$loadtest" "${common[@]}" --label llama-server --json "$out/llama-server.json"
stop_server

epas_cmd=(./target/release/epas serve --model "$model" --threads "$threads" --port "$port"
  --allow-untrained-sharing --no-prefix-cache)
echo "== ${epas_cmd[*]}" >&2
"${epas_cmd[@]}" >"$out/epas.log" 2>&1 &
pid=$!
wait_health
"$loadtest" "${common[@]}" --label "epas serve" --ratio-sweep 0,0.5 --json "$out/epas.json"
stop_server

"$loadtest" --merge "$out/llama-server.json,$out/epas.json" --json "$out/peers.json" \
  --markdown "$out/peers.md" --plot "$chart" >/dev/null

# The BENCHMARKS.md section: machine, versions, commands, then the tool's tables.
cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
flags="$(grep -o -w -m1 -E 'avx512_vnni|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
mem_gib="$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
epas_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || epas_rev="$epas_rev + uncommitted changes"
llama_version="$("$llama_bin/llama-server" --version 2>&1 | grep -m1 version || echo unknown)"
section="$out/section.md"
{
  echo "<!-- bench-peers:begin (written by scripts/bench-peers.sh; rerun it to update) -->"
  echo "## Served over HTTP against llama-server, measured with epas-loadtest"
  echo
  echo "\`bash scripts/bench-peers.sh $conc $threads $per_client\`, $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) cores ($cpu; ${flags% }), $mem_gib GiB, shared with other work, so"
  echo "compare rows of the same run (load average before / after: $load_before /"
  echo "$(cut -d' ' -f1-3 /proc/loadavg)). Model: \`$model\`; both servers with $threads kernel"
  echo "thread(s)."
  echo "Versions: epas $epas_rev ($(rustc --version | cut -d' ' -f1-2)); llama.cpp from"
  echo "\`llama-cpp-python\` 0.3.36 (\`$llama_version\`), built by \`scripts/build-llamacpp.sh\`."
  echo
  echo "One server at a time, the same load against each:"
  echo
  echo '```sh'
  echo "${llama_cmd[*]}" | sed "s|$llama_bin/||"
  echo "${epas_cmd[*]}"
  echo "epas-loadtest --url URL ${common[*]:2} --label llama-server | --label 'epas serve' --ratio-sweep 0,0.5"
  echo '```'
  echo
  echo "Closed loop: every client sends its next request when its last one ends, $per_client"
  echo "requests per client per point, synthetic prompts of 128 words (the prompt-token column"
  echo "of the JSON has the servers' own counts). Throughput counts tokens of completed"
  echo "requests per second of the whole point; TPOT is a request's (E2E - TTFT) / (tokens - 1)."
  echo "Sharing ratio 0.5 is forced sharing on the ordinary SmolLM2 (see the perplexity table)."
  echo "Chart: [docs/bench-peers.png](docs/bench-peers.png); JSON in \`$out/\`."
  echo
  sed -e 's/^## epas-loadtest results/### Results/' -e '/^Settings:$/,$d' "$out/peers.md"
  echo "<!-- bench-peers:end -->"
} >"$section"

if [ "$record" != 1 ]; then
  echo "wrote $out/peers.md and $chart" >&2
  exit 0
fi
python3 - "$section" BENCHMARKS.md <<'EOF'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n") + "\n"
path = sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- bench-peers:begin.*?<!-- bench-peers:end -->\n?", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section
tmp = path + ".tmp"
open(tmp, "w").write(text)
import os
os.replace(tmp, path)
EOF
echo "wrote $out/peers.md, $chart and the bench-peers section of BENCHMARKS.md" >&2
