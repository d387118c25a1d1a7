// matmul.cu: the dequantizing matmul y = x·Wᵀ (docs/ARITHMETIC.md §4).
//
// The written order fixes what each output is: lane l of a warp owns the
// groups l, l+32, … of a weight row; each group's dot product is summed
// sequentially in ascending k and then scaled; the 32 lane accumulators are
// folded by the xor butterfly. So one warp computes one weight row n, and
// what varies between the paths is how many rows of x share the weight
// bytes it reads:
//
//   mixq_gemv_xs  M = 1..8 when 32 groups of x fit in shared memory: the
//              block stages x one chunk of 32 groups at a time (one group
//              per lane), padded by 4 or 8 floats per group so that the
//              lanes' 16-byte reads hit distinct banks; the warps of the
//              block (8 weight rows) share it. The default where it applies.
//   mixq_gemv  M = 1..8: all rows of x at once, accumulators in registers,
//              x read through L1. Each warp load of x touches 32 cache
//              lines (one per lane's group), which limits it on the load
//              units; kept for shapes the staged path does not take and as
//              the benchmark's comparison.
//   mixq_gemm  M > 8: tiles of 16 rows of x, one tile per blockIdx.y; each
//              tile reads the weight matrix again (mostly from L2).
//
// In all three the weights are read from memory exactly once per tile.
//
// Both decode codes without int-to-float conversions and, when the
// alignment allows (vec = 1: K and the group size multiples of 8 for INT4,
// of 4 for INT8), read 8 (INT4) or 4 (INT8) codes with one 32-bit load and
// x with 16-byte loads. The order of the additions is the same on both
// paths.

#include "mixq.cuh"

#define MIXQ_MT_MAX 16

// One step of a group's sequential sum: t + a.x·q[0] + … + a.w·q[3], each
// product and sum rounded on its own, in ascending k. Every vector path
// goes through it, so the order is written once.
MIXQ_DEV float step4(float t, float4 a, const float *q) {
  t = f_add(t, f_mul(a.x, q[0]));
  t = f_add(t, f_mul(a.y, q[1]));
  t = f_add(t, f_mul(a.z, q[2]));
  return f_add(t, f_mul(a.w, q[3]));
}

// Adds x[m][k..k+3] · q[0..3] to s[m] for the live rows of the tile.
MIXQ_DEV void dot4(float *s, const float *xt, long long K, long long k, int MT, int mc,
                   const float *q) {
  for (int i = 0; i < MT; i++)
    if (i < mc) s[i] = step4(s[i], LDG((const float4 *)(xt + i * K + k)), q);
}

// One weight row per warp; rows of x m0 .. m0+mc-1 with mc <= MT.
MIXQ_DEV void matmul_tile(const float *x, long long M, const uint8_t *packed,
                          const uint16_t *scales, long long N, long long K, long long gs,
                          long long bits, long long vec, float *y, const int MT) {
  int int4 = bits == 4;
  long long ng = (K + gs - 1) / gs;
  long long rb = int4 ? (K + 1) / 2 : K;
  long long m0 = (long long)blockIdx.y * MT;
  if (m0 >= M) return;  // uniform across the block
  int mc = (int)lmin((long long)MT, M - m0);
  const float *xt = x + m0 * K;
  for (long long n = global_warp(); n < N; n += warps_in_grid()) {
    const uint8_t *prow = packed + n * rb;
    const uint16_t *srow = scales + n * ng;
    float acc[MIXQ_MT_MAX];
    for (int i = 0; i < MT; i++) acc[i] = 0.0f;
    for (long long g = lane_id(); g < ng; g += 32) {
      long long lo = g * gs, hi = lmin(lo + gs, K);
      float s[MIXQ_MT_MAX];
      for (int i = 0; i < MT; i++) s[i] = 0.0f;
      long long k = lo;
      if (vec && int4) {
        for (; k + 8 <= hi; k += 8) {
          uint32_t c = LDG((const uint32_t *)(prow + (k >> 1)));
          float q[8];
          for (int j = 0; j < 8; j++) q[j] = decode_nibble(c >> (4 * j));
          dot4(s, xt, K, k, MT, mc, q);
          dot4(s, xt, K, k + 4, MT, mc, q + 4);
        }
      } else if (vec) {
        for (; k + 4 <= hi; k += 4) {
          uint32_t c = LDG((const uint32_t *)(prow + k));
          float q[4];
          for (int j = 0; j < 4; j++) q[j] = decode_byte(c >> (8 * j));
          dot4(s, xt, K, k, MT, mc, q);
        }
      }
      for (; k < hi; k++) {  // the tail, or every column when vec = 0
        float q = code_at(prow, k, int4);
        for (int i = 0; i < MT; i++)
          if (i < mc) s[i] = f_add(s[i], f_mul(LDG(xt + i * K + k), q));
      }
      float sc = f32_from_f16(LDG(srow + g));
      for (int i = 0; i < MT; i++) acc[i] = f_add(acc[i], f_mul(s[i], sc));
    }
    for (int i = 0; i < MT; i++) {
      if (i < mc) {
        float v = warp_fold_f32(acc[i]);
        if (lane_id() == 0) y[(m0 + i) * N + n] = v;
      }
    }
  }
}

MIXQ_KERNEL mixq_gemv(const float *x, long long M, const uint8_t *packed, const uint16_t *scales,
                      long long N, long long K, long long gs, long long bits, long long vec,
                      float *y) {
  matmul_tile(x, M, packed, scales, N, K, gs, bits, vec, y, 8);
}

MIXQ_KERNEL mixq_gemm(const float *x, long long M, const uint8_t *packed, const uint16_t *scales,
                      long long N, long long K, long long gs, long long bits, long long vec,
                      float *y) {
  matmul_tile(x, M, packed, scales, N, K, gs, bits, vec, y, MIXQ_MT_MAX);
}

// Shared memory of mixq_gemv_xs: 48 KiB, the most a block may declare
// statically. The launcher checks M · 32 · xs_stride(gs) <= MIXQ_XS_FLOATS.
#define MIXQ_XS_FLOATS 12288

// Floats per staged group: gs padded so that stride/4 is odd. Lane l then
// reads 16 bytes at word l·stride + j, and the 8 lanes of each phase of a
// 16-byte shared load cover all 32 banks (gs is a multiple of 4 here).
MIXQ_DEV int xs_stride(long long gs) { return (int)gs + ((gs & 4) ? 8 : 4); }

// Requires vec (K and gs multiples of 8 for INT4, of 4 for INT8), M <= 8 and
// the shared-memory bound above; blockDim.x a multiple of 32, one weight row
// per warp. The block walks blocks of rows together because of the
// barriers; warps past N only help stage x. A launch outside those
// conditions returns at once, before any barrier, leaving y untouched,
// rather than fault on misaligned vector loads: the launcher
// (gpu.PlanMatMul) never makes one.
MIXQ_KERNEL mixq_gemv_xs(const float *x, long long M, const uint8_t *packed,
                         const uint16_t *scales, long long N, long long K, long long gs,
                         long long bits, long long vec, float *y) {
  __shared__ float4 xs4[MIXQ_XS_FLOATS / 4];  // float4: 16-byte aligned
  float *xs = (float *)xs4;
  int int4 = bits == 4;
  int stride = xs_stride(gs);  // floats per staged group
  if (!vec || M < 1 || M > 8 || M * 32 * stride > MIXQ_XS_FLOATS) return;  // uniform: see above
  long long ng = (K + gs - 1) / gs;
  long long rb = int4 ? (K + 1) / 2 : K;
  int mc = (int)M;
  int plane = 32 * stride;   // floats per staged row of x
  long long wpb = blockDim.x >> 5;
  int warp = (int)(threadIdx.x >> 5);
  int lane = lane_id();
  for (long long nb = (long long)blockIdx.x * wpb; nb < N; nb += (long long)gridDim.x * wpb) {
    long long n = nb + warp;
    int active = n < N;  // uniform across the warp
    const uint8_t *prow = packed + (active ? n : 0) * rb;
    const uint16_t *srow = scales + (active ? n : 0) * ng;
    float acc[8];
    for (int i = 0; i < 8; i++) acc[i] = 0.0f;
    for (long long g0 = 0; g0 < ng; g0 += 32) {
      long long k0 = g0 * gs;
      int len = (int)(lmin(k0 + 32 * gs, K) - k0);
      SYNC();  // the previous chunk is no longer read
      for (int i = 0; i < mc; i++) {
        const float *xr = x + i * K + k0;
        for (int kk = (int)threadIdx.x; kk < len; kk += (int)blockDim.x) {
          int gl = kk / (int)gs;
          xs[i * plane + gl * stride + (kk - gl * (int)gs)] = LDG(xr + kk);
        }
      }
      SYNC();
      long long g = g0 + lane;
      if (active && g < ng) {
        long long lo = g * gs, hi = lmin(lo + gs, K);
        const float *xg = xs + lane * stride - lo;  // xg[k] is x[k] of this group
        float s[8];
        for (int i = 0; i < 8; i++) s[i] = 0.0f;
        long long k = lo;
        if (int4) {
          for (; k + 8 <= hi; k += 8) {
            uint32_t c = LDG((const uint32_t *)(prow + (k >> 1)));
            float q[8];
            for (int j = 0; j < 8; j++) q[j] = decode_nibble(c >> (4 * j));
            for (int i = 0; i < 8; i++) {
              if (i < mc) {
                const float *xi = xg + i * plane + k;
                s[i] = step4(step4(s[i], LDS((const float4 *)xi), q), LDS((const float4 *)(xi + 4)), q + 4);
              }
            }
          }
        } else {
          for (; k + 4 <= hi; k += 4) {
            uint32_t c = LDG((const uint32_t *)(prow + k));
            float q[4];
            for (int j = 0; j < 4; j++) q[j] = decode_byte(c >> (8 * j));
            for (int i = 0; i < 8; i++)
              if (i < mc) s[i] = step4(s[i], LDS((const float4 *)(xg + i * plane + k)), q);
          }
        }
        for (; k < hi; k++) {  // not reached: vec makes every group a whole number of steps
          float q = code_at(prow, k, int4);
          for (int i = 0; i < 8; i++)
            if (i < mc) s[i] = f_add(s[i], f_mul(LDS(xg + i * plane + k), q));
        }
        float sc = f32_from_f16(LDG(srow + g));
        for (int i = 0; i < 8; i++) acc[i] = f_add(acc[i], f_mul(s[i], sc));
      }
    }
    if (active) {
      for (int i = 0; i < 8; i++) {
        if (i < mc) {
          float v = warp_fold_f32(acc[i]);
          if (lane_id() == 0) y[i * N + n] = v;
        }
      }
    }
  }
}
