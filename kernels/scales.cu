// scales.cu: group absmax scaling (docs/ARITHMETIC.md §1).
//
// One warp per group, walking the groups of the tensor with a grid-stride
// loop. The lanes read the group's elements with a stride of 32 (coalesced),
// reduce the absolute maximum with a butterfly (max is exact, so the order
// is free), and lane 0 stores the binary16 scale.
//
// Errors are reported through errs, two words initialised to MIXQ_NONE:
//   errs[0]: the lowest flat index (counted from row row0) holding a NaN or Inf;
//   errs[1]: the lowest flat group index (from row row0) whose scale overflows.
// Both are atomic minima, so the result does not depend on scheduling.

#include "mixq.cuh"

// w: [rows][cols] binary32; scales: [rows][ng] binary16 bits.
MIXQ_KERNEL mixq_group_scales(const float *w, long long rows, long long cols, long long gs,
                              long long qmax, long long row0, uint16_t *scales,
                              unsigned long long *errs) {
  long long ng = (cols + gs - 1) / gs;
  long long total = rows * ng;
  for (long long fg = global_warp(); fg < total; fg += warps_in_grid()) {
    long long row = ldiv_fast(fg, ng), g = fg - row * ng;
    long long lo = g * gs, hi = lmin(lo + gs, cols);
    const float *x = w + row * cols;
    uint16_t s;
    int st = scale_from_amax(group_amax(x, lo, hi), (int)qmax, &s);
    if (lane_id() == 0) scales[fg] = s;
    report_group(st, x, lo, hi, (row0 + row) * cols, row0 * ng + fg, errs);
  }
}
