#!/usr/bin/env bash
# Prints a fingerprint of the sources a binary is built from (the Rust crates, their manifests,
# the lock file, the cargo config and the embedded static files), computed from file contents
# alone so that it is the same in a git checkout and in a copy without .git (a device run).
# scripts/pack-gpu.sh writes it to dist/SOURCE; scripts/gpu-check.sh refuses stale dist/ binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
find Cargo.toml Cargo.lock .cargo src model builtin train server loadtest static -type f -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
