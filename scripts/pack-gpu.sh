#!/usr/bin/env bash
# Packs what a GPU machine without a Rust toolchain needs to run scripts/gpu-check.sh:
#   dist/epas-cuda.gz      the CUDA build of epas, stripped, for any x86-64-v3 (AVX2) CPU (the
#                          SIMD kernels still pick AVX-512 at run time where the CPU has it)
#   dist/epas-loadtest.gz  the load tool, stripped, same CPU level
#   dist/SOURCE            the fingerprint of the sources they were built from
#                          (scripts/source-hash.sh); gpu-check.sh refuses them when it differs
# about 30 MB together, under the 64 MiB a device run may carry. The GPU machine must have the
# NVIDIA driver and CUDA 13 cuBLAS/cuRAND/NVRTC/cudart (PyTorch's cu13 wheels will do);
# gpu-check.sh finds them. The model: the built-in one is inside the binary; SmolLM2 (98 MB,
# 93 MB gzipped) is too large to carry along and is used only where models/ already has it.
#
#   bash scripts/pack-gpu.sh     # ~10 min the first time on 2 cores (nvcc), then ~2 min
# then, on the GPU machine, from the repository root with dist/ in place:
#   bash scripts/gpu-check.sh --device cuda:0
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-C target-cpu=x86-64-v3"
mkdir -p dist
source_hash="$(bash scripts/source-hash.sh)"
(
  source scripts/setup-cuda.sh
  CARGO_TARGET_DIR=target-cuda-portable cargo build --release --features cuda --bin epas
)
CARGO_TARGET_DIR=target-portable cargo build --release -p epas-loadtest
pack() {
  strip -o "dist/$2" "$1"
  gzip -f -6 "dist/$2"
  ls -la "dist/$2.gz" >&2
}
pack target-cuda-portable/release/epas epas-cuda
pack target-portable/release/epas-loadtest epas-loadtest
if [ "$(bash scripts/source-hash.sh)" != "$source_hash" ]; then
  echo "pack-gpu: the sources changed during the build; run it again" >&2
  exit 1
fi
echo "$source_hash" >dist/SOURCE.tmp && mv dist/SOURCE.tmp dist/SOURCE
echo "pack-gpu: dist/ built from sources $source_hash" >&2
