// mixq.cuh: the pieces every mixq kernel shares.
//
// The kernels are written in the common subset of C and CUDA C++ so that one
// source serves two builds:
//
//   - nvcc (make ptx), for the GPU, where every floating-point operation is an
//     explicit round-to-nearest intrinsic and the file is also compiled with
//     -fmad=false, so that nothing is contracted into an FMA;
//   - a C compiler with MIXQ_SIM defined (package gpu/sim), which runs the
//     very same kernel bodies on the CPU under an emulation of the CUDA
//     execution model, so that the launch geometry, indexing and warp
//     reductions are tested on machines without a GPU.
//
// The arithmetic is docs/ARITHMETIC.md, operation for operation. Every kernel
// argument is 8 bytes wide (a pointer, a long long or a double), because the
// Go launcher passes each argument as a 64-bit word.

#ifndef MIXQ_CUH
#define MIXQ_CUH

#if defined(__CUDACC__)

#include <cuda_fp16.h>
#include <stdint.h>

#define MIXQ_DEV static __device__ __forceinline__
#define MIXQ_KERNEL extern "C" __global__ void

MIXQ_DEV float f_add(float a, float b) { return __fadd_rn(a, b); }
MIXQ_DEV float f_sub(float a, float b) { return __fsub_rn(a, b); }
MIXQ_DEV float f_mul(float a, float b) { return __fmul_rn(a, b); }
MIXQ_DEV float f_div(float a, float b) { return __fdiv_rn(a, b); }
MIXQ_DEV float f_rint(float v) { return rintf(v); }
MIXQ_DEV double d_add(double a, double b) { return __dadd_rn(a, b); }
MIXQ_DEV double d_sub(double a, double b) { return __dsub_rn(a, b); }
MIXQ_DEV double d_mul(double a, double b) { return __dmul_rn(a, b); }
MIXQ_DEV double d_div(double a, double b) { return __ddiv_rn(a, b); }
MIXQ_DEV uint32_t f2u(float x) { return __float_as_uint(x); }
MIXQ_DEV float u2f(uint32_t u) { return __uint_as_float(u); }
MIXQ_DEV uint16_t f16_from_f32(float x) { return __half_as_ushort(__float2half_rn(x)); }
MIXQ_DEV float f32_from_f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// Read-only loads through the non-coherent cache.
#define LDG(p) __ldg(p)

MIXQ_DEV uint32_t shfl_xor_u32(uint32_t v, int off) { return __shfl_xor_sync(0xffffffffu, v, off); }
MIXQ_DEV float shfl_xor_f32(float v, int off) { return __shfl_xor_sync(0xffffffffu, v, off); }
MIXQ_DEV unsigned long long shfl_xor_u64(unsigned long long v, int off) {
  return __shfl_xor_sync(0xffffffffu, v, off);
}
MIXQ_DEV void atomic_min_u64(unsigned long long *p, unsigned long long v) { atomicMin(p, v); }

// A barrier of the block, and a load from shared memory.
#define SYNC() __syncthreads()
#define LDS(p) (*(p))

#elif defined(MIXQ_SIM)

#include "sim.h"

#else
#error "mixq kernels build with nvcc or with MIXQ_SIM (package gpu/sim)"
#endif

// ---------------------------------------------------------------------------
// Thread geometry. Kernels are launched with blockDim.x a multiple of 32 and
// one-dimensional blocks; warps walk their work with warp-uniform loops so
// that every lane reaches every shuffle.

MIXQ_DEV int lane_id(void) { return (int)(threadIdx.x & 31u); }

MIXQ_DEV long long global_warp(void) {
  return ((long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x) >> 5;
}

MIXQ_DEV long long warps_in_grid(void) {
  return ((long long)gridDim.x * (long long)blockDim.x) >> 5;
}

MIXQ_DEV long long lmin(long long a, long long b) { return a < b ? a : b; }

// a / b for a group index: a 64-bit division is a long software sequence
// on the GPU, a 32-bit one much shorter, and every realistic tensor has
// fewer than 2^32 groups.
MIXQ_DEV long long ldiv_fast(long long a, long long b) {
  if (a <= 0xffffffffLL && b <= 0xffffffffLL) return (long long)((uint32_t)a / (uint32_t)b);
  return a / b;
}

// Max and min are exact and order-free: any butterfly gives the same result.
MIXQ_DEV uint32_t warp_max_u32(uint32_t v) {
  for (int off = 16; off > 0; off >>= 1) {
    uint32_t o = shfl_xor_u32(v, off);
    v = o > v ? o : v;
  }
  return v;
}

MIXQ_DEV unsigned long long warp_min_u64(unsigned long long v) {
  for (int off = 16; off > 0; off >>= 1) {
    unsigned long long o = shfl_xor_u64(v, off);
    v = o < v ? o : v;
  }
  return v;
}

// The canonical fold of the 32 lane accumulators (ARITHMETIC.md §4): halving
// offsets 16, 8, 4, 2, 1. Lane l adds lane l^off; commutativity of a single
// IEEE addition makes every lane hold the value the written order gives at
// lane 0.
MIXQ_DEV float warp_fold_f32(float acc) {
  for (int off = 16; off > 0; off >>= 1) acc = f_add(acc, shfl_xor_f32(acc, off));
  return acc;
}

// ---------------------------------------------------------------------------
// Scalar steps of the arithmetic.

#define MIXQ_ST_OK 0
#define MIXQ_ST_NONFINITE 1
#define MIXQ_ST_OVERFLOW 2

// The sentinel of the error words: no error seen.
#define MIXQ_NONE 0xffffffffffffffffull

// §1, steps 2-5: the binary16 scale of a group from the bit pattern of its
// absolute maximum.
MIXQ_DEV int scale_from_amax(uint32_t m, int qmax, uint16_t *scale) {
  if (m >= 0x7f800000u) {  // a NaN or an Inf in the group
    *scale = 0;
    return MIXQ_ST_NONFINITE;
  }
  float s32 = f_div(u2f(m), (float)qmax);  // one binary32 division
  uint16_t s16 = f16_from_f32(s32);       // RNE, subnormals kept
  if (s16 == 0x7c00u) {                   // +Inf: the scale does not fit
    *scale = s16;
    return MIXQ_ST_OVERFLOW;
  }
  if (s16 == 0 && m != 0) s16 = 0x0001u;  // a non-zero group keeps 2^-24
  *scale = s16;
  return MIXQ_ST_OK;
}

// §2 step 1: the reciprocal of the stored scale, 0 for a zero scale.
MIXQ_DEV float inv_scale(uint16_t s) { return s == 0 ? 0.0f : f_div(1.0f, f32_from_f16(s)); }

// §2 steps 2-4: one code.
MIXQ_DEV int quant_code(float x, float inv, int qmax) {
  float q = f_rint(f_mul(x, inv));
  float m = (float)qmax;
  if (q > m) q = m;
  if (q < -m) q = -m;
  return (int)q;
}

// Decoding: an INT4 nibble or an INT8 byte to its exact binary32 value
// without an int-to-float conversion instruction (a quarter-rate instruction
// on recent GPUs). 2^23 + u, built from the bits, minus 2^23 + bias is exact
// for every 8-bit u, so the result equals (float)q bit for bit.
MIXQ_DEV float decode_nibble(uint32_t nib) {  // 4-bit two's complement
  return f_sub(u2f(0x4b000000u | ((nib & 0x0fu) ^ 0x08u)), 8388616.0f);
}

MIXQ_DEV float decode_byte(uint32_t b) {  // 8-bit two's complement
  return f_sub(u2f(0x4b000000u | ((b & 0xffu) ^ 0x80u)), 8388736.0f);
}

// The code of column k in a packed row.
MIXQ_DEV float code_at(const uint8_t *prow, long long k, int int4) {
  if (!int4) return decode_byte(LDG(prow + k));
  uint32_t b = LDG(prow + (k >> 1));
  return decode_nibble((k & 1) ? (b >> 4) : b);
}

// ---------------------------------------------------------------------------
// Warp-per-group steps shared by the scale and the fused quantize kernels.

// The group's absolute maximum as a bit pattern, in every lane.
MIXQ_DEV uint32_t group_amax(const float *x, long long lo, long long hi) {
  uint32_t m = 0;
  for (long long k = lo + lane_id(); k < hi; k += 32) {
    uint32_t a = f2u(LDG(x + k)) & 0x7fffffffu;  // |x|: |-0| = +0
    m = a > m ? a : m;
  }
  return warp_max_u32(m);
}

// The lowest index in [lo, hi) of x that holds a NaN or an Inf, in every lane.
MIXQ_DEV unsigned long long first_nonfinite(const float *x, long long lo, long long hi) {
  unsigned long long first = MIXQ_NONE;
  for (long long k = lo + lane_id(); k < hi; k += 32) {
    if ((f2u(LDG(x + k)) & 0x7f800000u) == 0x7f800000u) {
      first = (unsigned long long)k;  // a lane's first hit is its lowest
      break;
    }
  }
  return warp_min_u64(first);
}

// Records the outcome of one group in errs. Called by every lane of the warp.
MIXQ_DEV void report_group(int st, const float *x, long long lo, long long hi, long long base,
                           long long fg, unsigned long long *errs) {
  if (st == MIXQ_ST_NONFINITE) {
    unsigned long long k = first_nonfinite(x, lo, hi);
    if (lane_id() == 0) atomic_min_u64(&errs[0], (unsigned long long)base + k);
  } else if (st == MIXQ_ST_OVERFLOW && lane_id() == 0) {
    atomic_min_u64(&errs[1], (unsigned long long)fg);
  }
}

#endif  // MIXQ_CUH
