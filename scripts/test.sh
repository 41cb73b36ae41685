#!/usr/bin/env bash
# Runs every test, on a fresh machine too: scripts/test-deps.sh first installs what the tests
# need (Debian packages, PyPI packages into .venv, the SmolLM2 file), then unit tests, model tests
# on the real SmolLM2 file, engine tests, end-to-end tests of the built binary over real HTTP
# (`cargo test --release --workspace`; release mode: the real-model tests need optimised
# kernels), tests/python with .venv's Python (the official `openai` and `anthropic` clients, the
# playground in headless Chromium with screenshots in target/test-artifacts/, promtool and a real
# Prometheus against a live server, deploy/k8s, compose and the Dockerfiles, the smg router), and
# the GPU check's steps on the CPU. Ends with one summary line of passed/failed/skipped counts.
#
# A test whose tool or module is missing fails. EPAS_TEST_ALLOW_SKIPS=1 lets it skip instead
# (not under CI=true), and the summary line says so. Arguments go to `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh || exit 1
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
logs=target/test-logs
mkdir -p "$logs"
rm -f "$logs/cargo.log" "$logs/pytest.xml"
status=0
cargo test --release --workspace --no-fail-fast "$@" 2>&1 | tee "$logs/cargo.log" || status=1
gpu="-"
if cargo build --release --bin epas; then
  python -m pytest tests/python -q -rs --junitxml="$logs/pytest.xml" || status=1
  # The GPU check's steps on the GPU code path run on the CPU (no GPU here): check-device in f32
  # and f16, bench, serve + epas-loadtest.
  bash scripts/gpu-check.sh --device cpu-tensor --quick --out target/gpu-check >/dev/null
  gpu=$?
fi
python scripts/test_summary.py "$logs/cargo.log" "$logs/pytest.xml" "$gpu" || status=1
exit "$status"
