// matmul.cu: the dequantizing matmul y = x·Wᵀ (docs/ARITHMETIC.md §4).
//
// The written order fixes what each output is: lane l of a warp owns the
// groups l, l+32, … of a weight row; each group's dot product is summed
// sequentially in ascending k and then scaled; the 32 lane accumulators are
// folded by the xor butterfly. So one warp computes one weight row n, and
// what varies between the paths is how many rows of x share the weight
// bytes it reads:
//
//   mixq_gemv  M = 1..8: all rows of x at once, accumulators in registers;
//              the weights are read from memory exactly once.
//   mixq_gemm  M > 8: tiles of 16 rows of x, one tile per blockIdx.y; each
//              tile reads the weight matrix again (mostly from L2).
//
// Both decode codes without int-to-float conversions and, when the
// alignment allows (vec = 1: K and the group size multiples of 8 for INT4,
// of 4 for INT8), read 8 (INT4) or 4 (INT8) codes with one 32-bit load and
// x with 16-byte loads. The order of the additions is the same on both
// paths.

#include "mixq.cuh"

#define MIXQ_MT_MAX 16

// Adds x[m][k..k+3] · q[0..3] to s[m] for the live rows of the tile, in
// ascending k.
MIXQ_DEV void dot4(float *s, const float *xt, long long K, long long k, int MT, int mc,
                   const float *q) {
  for (int i = 0; i < MT; i++) {
    if (i < mc) {
      float4 a = LDG((const float4 *)(xt + i * K + k));
      float t = s[i];
      t = f_add(t, f_mul(a.x, q[0]));
      t = f_add(t, f_mul(a.y, q[1]));
      t = f_add(t, f_mul(a.z, q[2]));
      t = f_add(t, f_mul(a.w, q[3]));
      s[i] = t;
    }
  }
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
