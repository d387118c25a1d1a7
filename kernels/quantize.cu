// quantize.cu: quantize and pack, INT8 and INT4 (docs/ARITHMETIC.md §2).
//
// Two kernels:
//
//   mixq_quantize_groups  the fused path: one warp per group computes the
//                         group's scale (as scales.cu does) and then encodes
//                         the group, so the weights cross the memory bus once
//                         (the second read hits the cache). It needs every
//                         packed byte to lie in one group: always true for
//                         INT8, and for INT4 when the group size is even.
//   mixq_quantize         codes from given scales, one thread per packed
//                         byte; any group size, including odd INT4 groups
//                         whose bytes straddle two groups.

#include "mixq.cuh"

MIXQ_KERNEL mixq_quantize_groups(const float *w, long long rows, long long cols, long long gs,
                                 long long bits, long long row0, uint8_t *packed,
                                 uint16_t *scales, unsigned long long *errs) {
  int int4 = bits == 4;
  int qmax = int4 ? 7 : 127;
  long long ng = (cols + gs - 1) / gs;
  long long rb = int4 ? (cols + 1) / 2 : cols;
  long long total = rows * ng;
  for (long long fg = global_warp(); fg < total; fg += warps_in_grid()) {
    long long row = ldiv_fast(fg, ng), g = fg - row * ng;
    long long lo = g * gs, hi = lmin(lo + gs, cols);
    const float *x = w + row * cols;
    uint16_t s;
    int st = scale_from_amax(group_amax(x, lo, hi), qmax, &s);
    if (lane_id() == 0) scales[fg] = s;
    if (st != MIXQ_ST_OK) {  // the call fails; the codes of this group do not matter
      report_group(st, x, lo, hi, (row0 + row) * cols, row0 * ng + fg, errs);
      continue;
    }
    float inv = inv_scale(s);
    uint8_t *prow = packed + row * rb;
    if (!int4) {
      for (long long k = lo + lane_id(); k < hi; k += 32)
        prow[k] = (uint8_t)(int8_t)quant_code(LDG(x + k), inv, qmax);
    } else {
      // lo is even; a group ending on an odd cols leaves the last high nibble 0.
      for (long long j = (lo >> 1) + lane_id(); 2 * j < hi; j += 32) {
        uint32_t b = (uint32_t)quant_code(LDG(x + 2 * j), inv, qmax) & 0x0fu;
        if (2 * j + 1 < hi) b |= ((uint32_t)quant_code(LDG(x + 2 * j + 1), inv, qmax) & 0x0fu) << 4;
        prow[j] = (uint8_t)b;
      }
    }
  }
}

// The code of column c of row x, with the scale of its group.
MIXQ_DEV uint32_t code_bits(const float *x, const uint16_t *srow, long long c, long long gs,
                            int qmax) {
  uint16_t s = LDG(srow + c / gs);
  return (uint32_t)quant_code(LDG(x + c), inv_scale(s), qmax);
}

// Rows walk blockIdx.y (grid-stride); the bytes of a row walk the x dimension.
MIXQ_KERNEL mixq_quantize(const float *w, const uint16_t *scales, long long rows, long long cols,
                          long long gs, long long bits, uint8_t *packed) {
  int int4 = bits == 4;
  int qmax = int4 ? 7 : 127;
  long long ng = (cols + gs - 1) / gs;
  long long rb = int4 ? (cols + 1) / 2 : cols;
  long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rb) return;
  for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
    const float *x = w + row * cols;
    const uint16_t *srow = scales + row * ng;
    uint32_t b;
    if (!int4) {
      b = code_bits(x, srow, j, gs, qmax) & 0xffu;
    } else {
      b = code_bits(x, srow, 2 * j, gs, qmax) & 0x0fu;
      if (2 * j + 1 < cols) b |= (code_bits(x, srow, 2 * j + 1, gs, qmax) & 0x0fu) << 4;
    }
    packed[row * rb + j] = (uint8_t)b;
  }
}
