#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: checks the GPU path and measures it.
#   1. `epas check-device` in f32 and f16 with dense weights, and f16 with GGUF blocks kept:
#      logits of the tensor forward on the GPU against the host CPU kernels on the same weights
#      for ratios 0, 0.25, 0.5, and batch invariance (every prompt at every ratio in one batch
#      vs each alone, fed the same tokens);
#   2. `epas bench` on the GPU, dense and quantized weights: prefill (512 tokens) and decode
#      (128 tokens) tokens/s per ratio;
#   3. `epas train` on the GPU against the CPU (step losses of one tiny run), and
#      `epas bench-train` on the GPU: training tokens/s per number of sharing layers;
#   4. `epas serve` on the GPU driven by `epas-loadtest` at 16 and 64 clients for ratios
#      0, 0.25 and 0.5 (128 prompt / 128 generated tokens, closed loop).
# It writes $OUT/gpu-check.md (the BENCHMARKS.md section) and exits non-zero if a check fails.
#
#   bash scripts/gpu-check.sh                       # cuda:0, the SmolLM2 file or the built-in
#   bash scripts/gpu-check.sh --device cpu-tensor --quick   # the same steps on the CPU (CI)
#
# Binaries: $EPAS_BIN (for cuda: target-cuda/release/epas, else dist/epas-cuda.gz unpacked; for
# other devices target/release/epas) and $LOADTEST_BIN (target/release/epas-loadtest, else
# dist/epas-loadtest.gz; scripts/pack-gpu.sh makes dist/ for machines without Rust). CUDA 13
# libraries (cuBLAS, cuRAND, NVRTC, cudart) are looked up in the Python `nvidia` wheels
# (PyTorch's) and common install paths when the loader cannot find them. dist/ binaries built
# from other sources than these (dist/SOURCE against scripts/source-hash.sh) are refused unless
# --allow-stale: their numbers would be reported for code they do not contain.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda:0
model=""
out="${OUT:-target/gpu-check}"
quick=0
allow_stale=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --allow-stale) allow_stale=1; shift ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

epas="${EPAS_BIN:-}"
if [ -z "$epas" ]; then
  if [ "${device#cuda}" = "$device" ]; then
    epas=target/release/epas
  elif [ -x target-cuda/release/epas ]; then
    epas=target-cuda/release/epas
  elif [ -f dist/epas-cuda.gz ]; then
    built_from="$(cat dist/SOURCE 2>/dev/null || echo unknown)"
    sources="$(bash scripts/source-hash.sh)"
    if [ "$built_from" != "$sources" ]; then
      echo "gpu-check: dist/epas-cuda.gz was built from sources $built_from, these are $sources:" \
        "run scripts/pack-gpu.sh again (or pass --allow-stale)" >&2
      [ "$allow_stale" = 1 ] || exit 1
    fi
    epas_note=" (dist/epas-cuda.gz built from sources \`$built_from\`; these sources: \`$sources\`)"
    epas="$out/epas-cuda"
    gunzip -c dist/epas-cuda.gz >"$epas"
    chmod +x "$epas"
  else
    epas=target/release/epas
  fi
fi
loadtest="${LOADTEST_BIN:-}"
if [ -z "$loadtest" ]; then
  if [ -x target/release/epas-loadtest ]; then
    loadtest=target/release/epas-loadtest
  elif [ -f dist/epas-loadtest.gz ]; then
    loadtest="$out/epas-loadtest"
    gunzip -c dist/epas-loadtest.gz >"$loadtest"
    chmod +x "$loadtest"
  fi
fi
for bin in "$epas" "${loadtest:-epas-loadtest}"; do
  [ -x "$bin" ] || { echo "gpu-check: $bin is missing (build it, or set EPAS_BIN / LOADTEST_BIN)" >&2; exit 1; }
done

# CUDA libraries the binary links against, when the loader does not find them itself.
if ldd "$epas" 2>/dev/null | grep -q "not found"; then
  dirs="$(python3 - <<'EOF' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
seen = []
for root in roots:
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
        d = os.path.dirname(lib)
        if d not in seen:
            seen.append(d)
print(":".join(seen))
EOF
)"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && dirs="${dirs:+$dirs:}$d"
  done
  export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing="$(ldd "$epas" | grep "not found" || true)"
  if [ -n "$missing" ]; then
    echo "gpu-check: $epas needs libraries this machine lacks:" >&2
    echo "$missing" >&2
    exit 1
  fi
fi

if [ -z "$model" ]; then
  if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  else
    model=builtin
  fi
fi

if [ "$quick" = 1 ]; then
  decode_steps=2; prompt_tokens=64; gen_tokens=8; repeats=1
  conc=2,4; per_client=1; serve_tokens=8
  train_steps=3
  bench_train_shape="--layers 2 --hidden 64 --heads 2 --kv-heads 1 --ffn 128 --seq-len 32 --batch-size 2"
else
  decode_steps=16; prompt_tokens=512; gen_tokens=128; repeats=3
  conc=16,64; per_client=4; serve_tokens=128
  train_steps=12
  bench_train_shape="--layers 12 --hidden 768 --heads 12 --kv-heads 4 --ffn 2048 --vocab-size 32000 --seq-len 1024 --batch-size 8"
fi

gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)"
report="$out/gpu-check.md"
{
  echo "## GPU check (\`scripts/gpu-check.sh\`)"
  echo
  echo "Device \`$device\`${gpu:+ ($gpu)}, model \`$model\`, $(date -u +%Y-%m-%d), binary \`$epas\`${epas_note:-}."
  echo
} >"$report"

echo "== probe $device" >&2
if ! "$epas" generate --model "$model" --device "$device" --prompt "Hello" --max-tokens 1 \
    >/dev/null 2>"$out/probe.log"; then
  echo "gpu-check: the model does not run on $device:" >&2
  tail -3 "$out/probe.log" >&2
  exit 1
fi

status=0
for setting in f32/dense f16/dense f16/quantized; do
  dtype="${setting%/*}"; weights="${setting#*/}"
  echo "== check-device $dtype $weights" >&2
  if ! "$epas" check-device --model "$model" --device "$device" --device-dtype "$dtype" \
      --device-weights "$weights" --decode-steps "$decode_steps" --allow-untrained-sharing \
      >"$out/check-$dtype-$weights.txt"; then
    status=1
  fi
  { echo "### Logits against the CPU path, batch invariance ($dtype, $weights weights)"; echo;
    cat "$out/check-$dtype-$weights.txt"; echo; } >>"$report"
done

for weights in dense quantized; do
  echo "== bench $weights" >&2
  # A failure here (e.g. a quantized kernel candle lacks for this format) is reported, and the
  # remaining steps still run.
  if ! "$epas" bench --model "$model" --device "$device" --device-weights "$weights" \
      --allow-untrained-sharing --ratios 0,0.25,0.5 --prompt-tokens "$prompt_tokens" \
      --gen-tokens "$gen_tokens" --repeats "$repeats" >"$out/bench-$weights.txt" \
      2>"$out/bench-$weights.log"; then
    status=1
    { echo "FAILED:"; tail -3 "$out/bench-$weights.log"; } >>"$out/bench-$weights.txt"
  fi
  { echo "### Single stream (f16, $weights weights): \`epas bench --device $device --device-weights $weights --prompt-tokens $prompt_tokens --gen-tokens $gen_tokens\`";
    echo; cat "$out/bench-$weights.txt"; echo; } >>"$report"
done

# Training: the same tiny run (the repository's docs as corpus) on the device and on the CPU's
# fused ops, step losses compared; then training tokens/s per sharing depth on the device.
echo "== train on $device against cpu" >&2
cat README.md docs/*.md >"$out/train-corpus.txt"
train_on() {
  rm -rf "$out/train-$2"
  "$epas" train --device "$1" --data "$out/train-corpus.txt" --out "$out/train-$2" \
    --vocab-size 512 --layers 4 --hidden 128 --heads 4 --kv-heads 2 --ffn 352 \
    --steps "$train_steps" --seq-len 128 --batch-size 8 --lr 2e-3 --sharing-ratio 0.5 \
    --interval 2 --seed 3 >"$out/train-$2.json" 2>"$out/train-$2.log"
}
if train_on cpu cpu && train_on "$device" device; then
  if ! python3 - "$out/train-cpu/train_log.csv" "$out/train-device/train_log.csv" \
      >"$out/train-compare.md" <<'PY'
import csv, sys
cpu, dev = ([r for r in csv.DictReader(open(p))] for p in sys.argv[1:3])
worst = 0.0
print("| step | sharing layers | cpu loss | device loss | difference | device tok/s |")
print("|---|---|---|---|---|---|")
for a, b in zip(cpu, dev):
    d = abs(float(a["loss"]) - float(b["loss"]))
    worst = max(worst, d)
    print(f"| {a['step']} | {a['sharing_layers']} | {float(a['loss']):.5f} | "
          f"{float(b['loss']):.5f} | {d:.2e} | {float(b['tokens_per_second']):.0f} |")
ok = len(cpu) == len(dev) > 0 and worst < 0.01
print()
print(f"max |loss difference| {worst:.2e} over {len(dev)} steps (tolerance 1e-2): "
      f"{'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
  then
    status=1
  fi
else
  status=1
  { echo "FAILED:"; tail -3 "$out/train-cpu.log" "$out/train-device.log"; } >"$out/train-compare.md"
fi
{ echo "### Training on the device against the CPU (f32, progressive sharing to 2 of 4 layers)";
  echo; cat "$out/train-compare.md"; echo; } >>"$report"

echo "== bench-train" >&2
if ! "$epas" bench-train --device "$device" $bench_train_shape --repeats "$repeats" \
    >"$out/bench-train.md" 2>"$out/bench-train.log"; then
  status=1
  { echo "FAILED:"; tail -3 "$out/bench-train.log"; } >>"$out/bench-train.md"
fi
{ echo "### Training speed per sharing depth: \`epas bench-train --device $device $bench_train_shape\`";
  echo; cat "$out/bench-train.md"; echo; } >>"$report"

# curl may be missing on a bare GPU machine; python3 is there.
healthy() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" \
    >/dev/null 2>&1
}

echo "== serve + epas-loadtest" >&2
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$epas" serve --model "$model" --device "$device" --port "$port" --allow-untrained-sharing \
  --max-batch-size 64 >"$out/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1200); do
  healthy "http://127.0.0.1:$port/health" && break
  kill -0 "$pid" 2>/dev/null || {
    cat "$report"
    echo "gpu-check: the server exited:" >&2
    tail -5 "$out/serve.log" >&2
    exit 1
  }
  sleep 0.1
done
"$loadtest" --url "http://127.0.0.1:$port" --sweep "concurrency=$conc" \
  --requests-per-client "$per_client" --prompt-tokens 128 --max-tokens "$serve_tokens" \
  --ignore-eos --warmup 2 --timeout 600 --seed 0 --ratio-sweep 0,0.25,0.5 \
  --label "epas serve --device $device" --json "$out/serve.json" --markdown "$out/serve.md" >/dev/null
{ echo "### Served (f16), epas-loadtest at $conc clients, 128 prompt / $serve_tokens generated tokens";
  echo; sed -e 's/^## epas-loadtest results/#### Results/' "$out/serve.md"; echo; } >>"$report"

cat "$report"
if [ "$status" != 0 ]; then
  echo "gpu-check: a check or benchmark FAILED (see above)" >&2
fi
exit "$status"
