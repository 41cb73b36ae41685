#!/usr/bin/env bash
# Runs every test: unit tests, model tests on the real SmolLM2 file, and the CLI tests of the
# built binary. Release mode: the real-model tests need optimised kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh >/dev/null
cargo test --release --workspace "$@"
