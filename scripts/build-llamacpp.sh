#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-server from the llama.cpp vendored in the
# llama-cpp-python 0.3.36 source package (PyPI), into third_party/llama.cpp (git-ignored).
# Used only to measure the peer on the same machine; nothing of it is part of EPAS Serve.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/third_party"
bin="$dest/llama.cpp/build/bin"
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-server" ]; then
  echo "$bin"
  exit 0
fi
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; }
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" "llama-cpp-python==0.3.36"
tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
rm -rf "$dest/llama.cpp"
mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$dest/llama.cpp"
cd "$dest/llama.cpp"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build --target llama-bench llama-server -j "$(nproc)" >/dev/null
echo "$bin"
