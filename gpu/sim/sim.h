// sim.h: the CUDA names the mixq kernels use, for a C compiler.
//
// Included by kernels/mixq.cuh when MIXQ_SIM is defined. Thread and block
// indices come from the emulator in sim.c, which runs each CUDA thread of a
// block as a coroutine on one OS thread and meets the threads of a warp at
// every shuffle. Floating-point operations are plain C operations: the
// package compiles with FP contraction off (the pragma below) and SSE2
// arithmetic, so each one
// is a single IEEE operation rounded to nearest even, which is what the
// __*_rn intrinsics are.

#ifndef MIXQ_SIM_H
#define MIXQ_SIM_H

// No contraction of a*b+c into an FMA, whatever the target (arm64 compilers
// contract by default). The go command does not accept -ffp-contract=off in
// #cgo CFLAGS, hence the pragma.
#pragma GCC optimize("fp-contract=off")

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  unsigned x, y, z;
} sim_dim3;

typedef struct __attribute__((aligned(16))) {  // CUDA's float4 is 16-byte aligned
  float x, y, z, w;
} float4;

extern sim_dim3 sim_block_idx, sim_block_dim, sim_grid_dim;
extern sim_dim3 *sim_thread_idx;  // the running coroutine's index

#define threadIdx (*sim_thread_idx)
#define blockIdx sim_block_idx
#define blockDim sim_block_dim
#define gridDim sim_grid_dim

#define MIXQ_DEV static inline
#define MIXQ_KERNEL void

// A load through the read-only cache. On a GPU a misaligned vector load
// faults; here it would just work, so the alignment is checked and a
// violation fails the launch.
const void *sim_aligned(const void *p, unsigned long size);
#define LDG(p) (*(__typeof__(p))sim_aligned((p), sizeof *(p)))
#define LDS(p) (*(__typeof__(p))sim_aligned((p), sizeof *(p)))

// Shared memory: blocks run one at a time, so a static array is the
// block's shared memory (its contents carry over between blocks, as
// uninitialised shared memory may on a GPU).
#define __shared__ static

// __syncthreads(): every thread of the block must arrive.
void sim_syncthreads(void);
#define SYNC() sim_syncthreads()

MIXQ_DEV float f_add(float a, float b) { return a + b; }
MIXQ_DEV float f_sub(float a, float b) { return a - b; }
MIXQ_DEV float f_mul(float a, float b) { return a * b; }
MIXQ_DEV float f_div(float a, float b) { return a / b; }
MIXQ_DEV float f_rint(float v) { return nearbyintf(v); }  // the rounding mode is to nearest even
MIXQ_DEV double d_add(double a, double b) { return a + b; }
MIXQ_DEV double d_sub(double a, double b) { return a - b; }
MIXQ_DEV double d_mul(double a, double b) { return a * b; }
MIXQ_DEV double d_div(double a, double b) { return a / b; }

MIXQ_DEV uint32_t f2u(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

MIXQ_DEV float u2f(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

// __float2half_rn and __half2float in software (binary16, RNE, subnormals
// kept; scripts/contract-check compared these with the hardware on all 2^32
// inputs).
uint16_t sim_f32_to_f16(uint32_t x);
uint32_t sim_f16_to_f32(uint16_t h);

MIXQ_DEV uint16_t f16_from_f32(float x) { return sim_f32_to_f16(f2u(x)); }
MIXQ_DEV float f32_from_f16(uint16_t h) { return u2f(sim_f16_to_f32(h)); }

// __shfl_xor_sync(0xffffffff, v, off): every lane of the warp must arrive.
uint64_t sim_shfl_xor(uint64_t v, int off);

MIXQ_DEV uint32_t shfl_xor_u32(uint32_t v, int off) { return (uint32_t)sim_shfl_xor(v, off); }
MIXQ_DEV unsigned long long shfl_xor_u64(unsigned long long v, int off) {
  return sim_shfl_xor(v, off);
}
MIXQ_DEV float shfl_xor_f32(float v, int off) { return u2f((uint32_t)sim_shfl_xor(f2u(v), off)); }

// One coroutine runs at a time, so a plain read-modify-write is atomic.
MIXQ_DEV void atomic_min_u64(unsigned long long *p, unsigned long long v) {
  if (v < *p) *p = v;
}

#endif  // MIXQ_SIM_H
