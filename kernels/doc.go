// Package kernels holds the CUDA sources of mixq's four kernel families and
// the PTX that make ptx builds from them, embedded so that a CUDA backend
// carries its kernels inside the binary.
//
// One family per file: scales.cu (group absmax scaling), quantize.cu
// (quantize and pack, fused with scaling or from given scales),
// dequantize.cu, matmul.cu (the dequantizing GEMV and GEMM) and stats.cu
// (activation variance). mixq.cuh holds what they share. The sources follow
// docs/ARITHMETIC.md operation for operation, and are written in the common
// subset of C and CUDA C++ so that package gpu/sim can run the same bodies
// on a CPU.
//
// The PTX is generated (make ptx) with the CUDA 11.8 toolkit for the
// virtual architectures compute_80 and compute_90, with -fmad=false; PTX ISA
// 7.8 is JIT-compiled by any current driver. CI regenerates it and fails on
// a difference, so the committed PTX is always that of the committed
// sources. This package is pure Go: it only embeds text.
package kernels
