// Package sim runs mixq's CUDA kernels on the CPU. The kernel sources of
// package kernels are compiled here as C (zkernels.c, generated from them)
// and executed by a small emulator of the CUDA execution model: blocks one
// after another, each CUDA thread a coroutine, the lanes of a warp meeting
// at every shuffle. Device memory is host memory.
//
// It exists for testing. Wrapped by gpu.New it is a quant.Backend named
// "cuda-sim" whose every launch goes through the same driver code, launch
// geometry, chunked two-stream pipeline and error decoding as the CUDA
// backend, so the conformance suite checks all of that bit for bit against
// the CPU on machines without a GPU. What it cannot check is the hardware:
// the rounding of the intrinsics (scripts/contract-check covers that),
// memory ordering between streams, and speed.
package sim
