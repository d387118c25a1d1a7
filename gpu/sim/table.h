// table.h: the sim entry of every kernel, included at the end of the
// generated zkernels.c so that it sees the kernel definitions. Each entry
// reads the 64-bit argument words in the order of the kernel's parameters.

#include <stddef.h>
#include <string.h>
#include "simrt.h"

#define A(i, T) ((T)(uintptr_t)args[i])
#define L(i) ((long long)args[i])

static void e_group_scales(const uint64_t *args) {
  mixq_group_scales(A(0, const float *), L(1), L(2), L(3), L(4), L(5), A(6, uint16_t *),
                    A(7, unsigned long long *));
}

static void e_quantize_groups(const uint64_t *args) {
  mixq_quantize_groups(A(0, const float *), L(1), L(2), L(3), L(4), L(5), A(6, uint8_t *),
                       A(7, uint16_t *), A(8, unsigned long long *));
}

static void e_quantize(const uint64_t *args) {
  mixq_quantize(A(0, const float *), A(1, const uint16_t *), L(2), L(3), L(4), L(5),
                A(6, uint8_t *));
}

static void e_dequantize(const uint64_t *args) {
  mixq_dequantize(A(0, const uint8_t *), A(1, const uint16_t *), L(2), L(3), L(4), L(5),
                  A(6, float *));
}

static void e_gemv(const uint64_t *args) {
  mixq_gemv(A(0, const float *), L(1), A(2, const uint8_t *), A(3, const uint16_t *), L(4), L(5),
            L(6), L(7), L(8), A(9, float *));
}

static void e_gemv_xs(const uint64_t *args) {
  mixq_gemv_xs(A(0, const float *), L(1), A(2, const uint8_t *), A(3, const uint16_t *), L(4), L(5),
               L(6), L(7), L(8), A(9, float *));
}

static void e_gemm(const uint64_t *args) {
  mixq_gemm(A(0, const float *), L(1), A(2, const uint8_t *), A(3, const uint16_t *), L(4), L(5),
            L(6), L(7), L(8), A(9, float *));
}

static void e_channel_welford(const uint64_t *args) {
  mixq_channel_welford(A(0, const float *), L(1), L(2), A(3, double *), A(4, double *));
}

#undef A
#undef L

sim_kernel sim_lookup(const char *name) {
  static const struct {
    const char *name;
    sim_kernel k;
  } table[] = {
      {"mixq_group_scales", e_group_scales}, {"mixq_quantize_groups", e_quantize_groups},
      {"mixq_quantize", e_quantize},         {"mixq_dequantize", e_dequantize},
      {"mixq_gemv", e_gemv},                 {"mixq_gemm", e_gemm},
      {"mixq_gemv_xs", e_gemv_xs},
      {"mixq_channel_welford", e_channel_welford},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(table[i].name, name) == 0) return table[i].k;
  return NULL;
}
