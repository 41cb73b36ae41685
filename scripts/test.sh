#!/usr/bin/env bash
# Runs every test: unit tests, model tests on the real SmolLM2 file, engine tests, end-to-end
# tests of the built binary over real HTTP, and the official `openai` Python client against a
# running server. Release mode: the real-model tests need optimised kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh >/dev/null
cargo test --release --workspace "$@"
cargo build --release --bin epas
python3 -m pytest tests/python -q
