#!/usr/bin/env bash
# Type-checks and lints the `cuda` feature on a machine without a GPU (what CI runs): installs
# only CUDA's compiler and headers (scripts/setup-cuda.sh --compiler; candle's kernels are
# compiled to PTX by its build script), then `cargo clippy --features cuda` over every target.
# It does not link: a linked build needs the CUDA libraries too (scripts/setup-cuda.sh, then
# `cargo build --release --features cuda`, or scripts/pack-gpu.sh).
#
#   bash scripts/check-cuda.sh      # CARGO_TARGET_DIR defaults to target/cuda-check
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup-cuda.sh
source scripts/setup-cuda.sh --compiler
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda-check}"
cargo clippy --release --workspace --all-targets --features cuda -- -D warnings
