#!/usr/bin/env bash
# Installs what `cargo build --features cuda` needs on a machine without a GPU or a system CUDA:
# the CUDA 13.0 toolkit pieces from NVIDIA's PyPI wheels (nvcc + cicc + ptxas + nvlink + fatbinary,
# headers, CCCL, cudart, NVRTC, cuBLAS/cuBLASLt, cuRAND) into third_party/cuda (git-ignored),
# plus a link-time stub libcuda.so.1 (the real one comes with the NVIDIA driver).
#
#   bash scripts/setup-cuda.sh              # install (idempotent), print the environment
#   source scripts/setup-cuda.sh            # install and export the environment into this shell
#   eval "$(bash scripts/setup-cuda.sh --env)"
#   bash scripts/setup-cuda.sh --compiler   # only the compiler and headers (270 MB, not 1.2 GB):
#                                           # enough for `cargo check`/`clippy --features cuda`
#                                           # (what CI runs), not for linking
#
# Then: cargo build --release --features cuda --bin epas
#
# Why CUDA 13.0: the cu12 nvcc wheels (nvidia-cuda-nvcc-cu12, every 12.x) ship only ptxas, not
# nvcc; the CUDA 13 wheels ship the whole compiler. cudarc 0.19 (candle 0.11) supports up to
# 13.4; 13.0 runs on every CUDA 13 driver (>= 580). Debian bookworm has no CUDA packages in the
# sources configured here (nvidia-cuda-toolkit is in non-free).
#
# The binary links dynamically (cudarc's `dynamic-linking`, candle-kernels' cudart) against
# libcuda.so.1, libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and
# libnvrtc.so.13: on the GPU machine these come from the driver and a CUDA 13 toolkit or
# PyTorch's cu13 wheels (LD_LIBRARY_PATH=.../site-packages/nvidia/cu13/lib).
#
# CUDA_COMPUTE_CAP (default 90 = H100/H200, i.e. sm_90a): there is no GPU to query here; 80 is
# A100, 89 L4/RTX 40xx. The generic kernels are PTX (JIT-compiled by the driver); the quantized
# matmul kernels (libmoe.a) are SASS for exactly this compute capability.

# Sourced: install in a child bash (so `set -e` never touches the caller's shell), then export.
if (return 0 2>/dev/null); then
  if bash "${BASH_SOURCE[0]}" --install "$@" >/dev/null; then
    eval "$(bash "${BASH_SOURCE[0]}" --env)"
    echo "setup-cuda: environment exported (CUDA_HOME=$CUDA_HOME, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)" >&2
  else
    echo "setup-cuda: installation failed" >&2
    return 1
  fi
  return 0
fi
set -euo pipefail

_epas_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EPAS_CUDA_DIR="${EPAS_CUDA_DIR:-$_epas_root/third_party/cuda}"
_site="$EPAS_CUDA_DIR/site"
_cuda="$_site/nvidia/cu13"

_env() {
  cat <<EOF
export CUDA_HOME="$_cuda"
export CUDA_PATH="$_cuda"
export CUDA_ROOT="$_cuda"
export NVCC="$_cuda/bin/nvcc"
export PATH="$_cuda/bin:\$PATH"
export LIBRARY_PATH="$_cuda/lib:$_cuda/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$_cuda/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
EOF
}

_only_compiler=0
_print_env=1
for _arg in "$@"; do
  case "$_arg" in
    --env) _env; exit 0 ;;
    --install) _print_env=0 ;;
    --compiler) _only_compiler=1 ;;
    *) echo "setup-cuda: unknown argument $_arg (use --env, --install, --compiler)" >&2; exit 2 ;;
  esac
done

_compiler_wheels=("nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85")
_library_wheels=("nvidia-cuda-nvrtc==13.0.88" "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35")

_install() {
  local wheels=("${_compiler_wheels[@]}")
  [ "$_only_compiler" = 1 ] || wheels+=("${_library_wheels[@]}")
  if [ -x "$_cuda/bin/nvcc" ] && [ -e "$_cuda/lib/stubs/libcuda.so" ] \
     && { [ "$_only_compiler" = 1 ] || [ -e "$_cuda/lib/libcublas.so" ]; }; then
    echo "setup-cuda: already installed in $_cuda" >&2
    return 0
  fi
  echo "setup-cuda: installing ${#wheels[@]} CUDA 13.0 wheels into $_site" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$_site" \
    "${wheels[@]}"
  # Some wheels keep lib64/ and some lib/: one lib/ with the unversioned names the linker wants.
  mkdir -p "$_cuda/lib"
  if [ -d "$_cuda/lib64" ] && [ ! -L "$_cuda/lib64" ]; then
    cp -an "$_cuda/lib64/." "$_cuda/lib/" && rm -rf "$_cuda/lib64"
  fi
  ln -sfn lib "$_cuda/lib64"
  local f base
  for f in "$_cuda"/lib/lib*.so.*; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"
    case "$base" in *.alt.so*|*builtins*) continue ;; esac
    ln -sfn "$base" "$_cuda/lib/${base%%.so.*}.so"
  done
  chmod +x "$_cuda"/bin/* "$_cuda"/nvvm/bin/* 2>/dev/null || true
  # libcuda is the driver's: a stub with the driver API's symbols, soname libcuda.so.1, so the
  # linker resolves cu* symbols and the binary asks for libcuda.so.1 at run time. Every stub
  # returns CUDA_ERROR_NO_DEVICE (100), so a run against it fails cleanly instead of crashing.
  mkdir -p "$_cuda/lib/stubs"
  if [ -e "$_cuda/lib/stubs/libcuda.so" ] && [ ! -L "$_cuda/lib/stubs/libcuda.so" ]; then
    :  # the toolkit brought its own stub
  else
    local tmpc
    tmpc="$(mktemp --suffix=.c)"
    grep -ohE '\bCUresult CUDAAPI (cu[A-Za-z0-9_]+)\(' "$_cuda/include/cuda.h" \
      | sed -E 's/.*CUDAAPI (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
      | awk '{print "int " $1 "(void) { return 100; }"}' >"$tmpc"
    # cuda.h #defines the versioned names (cuMemAlloc -> cuMemAlloc_v2): export both spellings.
    grep -ohE '#define (cu[A-Za-z0-9_]+) +(cu[A-Za-z0-9_]+_v[0-9]+)' "$_cuda/include/cuda.h" \
      | awk '{print "int " $3 "(void) { return 100; }"}' | sort -u >>"$tmpc"
    grep -ohE '#define (cu[A-Za-z0-9_]+) +(__CUDA_API_PTDS|__CUDA_API_PTSZ)\((cu[A-Za-z0-9_]+)\)' \
      "$_cuda/include/cuda.h" | sed -E 's/.*\((cu[A-Za-z0-9_]+)\)/\1/' \
      | awk '{print "int " $1 "(void) { return 100; }"; print "int " $1 "_ptds(void) { return 100; }"; print "int " $1 "_ptsz(void) { return 100; }"}' \
      | sort -u >>"$tmpc"
    sort -u -o "$tmpc" "$tmpc"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$_cuda/lib/stubs/libcuda.so" "$tmpc"
    rm -f "$tmpc"
  fi
  # For a run without a GPU (LD_LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs): never on the
  # GPU machine, where the driver's libcuda.so.1 must be found instead.
  ln -sfn libcuda.so "$_cuda/lib/stubs/libcuda.so.1"
  "$_cuda/bin/nvcc" --version | tail -n 2 >&2
}

_install
if [ "$_print_env" = 1 ]; then
  echo "# setup-cuda: add these to the build's environment (or: source scripts/setup-cuda.sh)" >&2
  _env
fi
