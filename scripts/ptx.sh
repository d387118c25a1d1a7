#!/usr/bin/env bash
# Regenerates kernels/ptx from kernels/*.cu with nvcc (the CUDA 11.8 toolkit
# from Debian, or any nvcc given as NVCC). The flags are the contract:
# -fmad=false keeps every multiply and add separately rounded, and neither
# --use_fast_math nor -ftz is ever given (subnormals and IEEE division stay).
set -euo pipefail
cd "$(dirname "$0")/../kernels"
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || { echo "ptx.sh: $NVCC not found (install nvidia-cuda-toolkit)" >&2; exit 1; }
for arch in compute_80 compute_90; do
  mkdir -p "ptx/$arch"
  for src in *.cu; do
    out="ptx/$arch/${src%.cu}.ptx"
    "$NVCC" -ptx -arch="$arch" -fmad=false -prec-div=true -ftz=false -O3 -std=c++14 -o "$out" "$src"
  done
done
