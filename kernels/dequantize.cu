// dequantize.cu: packed codes back to binary32 (docs/ARITHMETIC.md §3).
//
// w = f32(q) * s is exact, so only the indexing has to be right. One thread
// per packed byte of a row (one INT8 column, or the two INT4 columns of a
// byte, which may belong to different groups when the group size is odd);
// rows walk blockIdx.y with a grid-stride loop. Column indices fit in 32
// bits (the launcher checks cols < 2^31), which keeps the per-element group
// division cheap.

#include "mixq.cuh"

MIXQ_DEV float dequant_col(float q, const uint16_t *srow, int c, int gs) {
  return f_mul(q, f32_from_f16(LDG(srow + c / gs)));
}

MIXQ_KERNEL mixq_dequantize(const uint8_t *packed, const uint16_t *scales, long long rows,
                            long long cols, long long gs, long long bits, float *w) {
  int int4 = bits == 4;
  long long ng = (cols + gs - 1) / gs;
  long long rb = int4 ? (cols + 1) / 2 : cols;
  long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rb) return;
  for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
    const uint16_t *srow = scales + row * ng;
    float *out = w + row * cols;
    uint32_t b = LDG(packed + row * rb + j);
    if (!int4) {
      out[j] = dequant_col(decode_byte(b), srow, (int)j, (int)gs);
    } else {
      out[2 * j] = dequant_col(decode_nibble(b), srow, (int)(2 * j), (int)gs);
      if (2 * j + 1 < cols) out[2 * j + 1] = dequant_col(decode_nibble(b >> 4), srow, (int)(2 * j + 1), (int)gs);
    }
  }
}
