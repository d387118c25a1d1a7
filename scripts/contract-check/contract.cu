// contract.cu — the mixq arithmetic contract check (see README.md).
//
// Reads cases.bin (written by ./gen from the pure-Go reference backend),
// runs straightforward CUDA kernels that transcribe docs/ARITHMETIC.md
// operation for operation, and compares every output bit for bit.
// These are NOT product kernels: they exist to show that the written
// arithmetic is reproducible on NVIDIA GPUs.
//
//   nvcc -O2 -arch=sm_90 -fmad=false -o contract contract.cu
//   ./contract cases.bin              run the kernels on the GPU
//   ./contract --host cases.bin       run the same per-element code on the CPU
//
// The file also builds without CUDA, as a host-only emulation that shares
// the per-element functions with the kernels (only the rounding intrinsics
// differ), which lets the transcription be tested where there is no GPU:
//
//   g++ -O2 -std=c++17 -ffp-contract=off -x c++ -o contract_host contract.cu
//
// Never compile with --use_fast_math, -ftz=true or -prec-div=false: the
// contract keeps subnormals and uses IEEE division.

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define HD __host__ __device__
#else
#define HD
#endif

// ---------------------------------------------------------------------------
// File format constants (README.md, "File format").

enum Kind : uint32_t {
  KIND_GROUPSCALES = 1,
  KIND_GROUPSCALES_ERROR = 2,
  KIND_QUANTIZE = 3,
  KIND_DEQUANTIZE = 4,
  KIND_MATMUL = 5,
  KIND_CHANNELSTATS = 6,
};

enum DType : uint32_t { DT_F32 = 1, DT_F64 = 2, DT_F16 = 3, DT_U8 = 4, DT_I64 = 5 };

enum Status : int64_t { ST_OK = 0, ST_NONFINITE = 1, ST_OVERFLOW = 2 };

static const char *kind_name(uint32_t k) {
  switch (k) {
    case KIND_GROUPSCALES: return "groupscales";
    case KIND_GROUPSCALES_ERROR: return "groupscales_error";
    case KIND_QUANTIZE: return "quantize";
    case KIND_DEQUANTIZE: return "dequantize";
    case KIND_MATMUL: return "matmul";
    case KIND_CHANNELSTATS: return "channelstats";
  }
  return "unknown";
}

static size_t dtype_size(uint32_t dt) {
  switch (dt) {
    case DT_F32: return 4;
    case DT_F64: return 8;
    case DT_F16: return 2;
    case DT_U8: return 1;
    case DT_I64: return 8;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// The arithmetic primitives. On the device every operation is an explicit
// round-to-nearest-even intrinsic (never contracted into an FMA); on the
// host the same expressions use plain IEEE operations (x86-64 SSE, RNE,
// compiled with -ffp-contract=off).

HD inline uint32_t f2u(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}

HD inline float u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

HD inline float f_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

HD inline float f_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

HD inline float f_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

HD inline float f_rint(float v) {  // round half to even
#ifdef __CUDA_ARCH__
  return rintf(v);
#else
  return std::nearbyint(v);  // the default rounding mode is to nearest even
#endif
}

HD inline double d_add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

HD inline double d_sub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

HD inline double d_mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

HD inline double d_div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// Software binary32 -> binary16, round to nearest even, subnormals kept,
// overflow to Inf (|x| >= 65520), NaN -> quiet NaN with the top payload bits.
HD inline uint16_t soft_f32_to_f16(uint32_t x) {
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // Inf or NaN
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  }
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {  // >= 2^-14: a normal binary16
    uint32_t r = a - 0x38000000u;  // rebias the exponent from 127 to 15
    uint32_t h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;  // a carry into the exponent is right
    return (uint16_t)(sign | h);
  }
  uint32_t e = a >> 23;  // biased binary32 exponent
  if (e < 102) return (uint16_t)sign;  // below 2^-25: rounds to zero
  // A binary16 subnormal: the value in units of 2^-24 is mant·2^(e-126).
  uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e;  // 14 … 24
  uint32_t h = mant >> shift;
  uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++;  // 0x3ff + 1 = 0x400 is 2^-14, also right
  return (uint16_t)(sign | h);
}

// Software binary16 -> binary32 (exact).
HD inline uint32_t soft_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return sign | 0x7f800000u | (m << 13);
  if (e == 0) {
    if (m == 0) return sign;
    uint32_t ee = 113;  // 2^-14 as a biased binary32 exponent, for m's implicit position
    while (!(m & 0x400u)) {
      m <<= 1;
      ee--;
    }
    return sign | (ee << 23) | ((m & 0x3ffu) << 13);
  }
  return sign | ((e + 112) << 23) | (m << 13);
}

HD inline uint16_t f16_from_f32(float x) {  // f16(x), RNE
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(x));
#else
  return soft_f32_to_f16(f2u(x));
#endif
}

HD inline float f32_from_f16(uint16_t h) {  // exact widening
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  return u2f(soft_f16_to_f32(h));
#endif
}

// ---------------------------------------------------------------------------
// The per-element steps of docs/ARITHMETIC.md, shared by kernels and host.

struct Layout {
  int64_t rows, cols, gs, bits;  // bits: 8 (INT8) or 4 (INT4)
  HD int64_t ng() const { return (cols + gs - 1) / gs; }
  HD int64_t row_bytes() const { return bits == 4 ? (cols + 1) / 2 : cols; }
  HD int qmax() const { return bits == 4 ? 7 : 127; }
};

HD inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// §1 Group absmax scaling of flat group fg (row-major over [rows][ng]).
// Returns ST_OK, ST_NONFINITE (with *nf_index the lowest flat index of a NaN
// or Inf in the group) or ST_OVERFLOW. *amax_bits receives max(bits & 0x7fffffff).
HD inline int group_scale(const float *w, Layout l, int64_t fg, uint16_t *scale,
                          uint32_t *amax_bits, int64_t *nf_index) {
  int64_t ng = l.ng();
  int64_t row = fg / ng, g = fg % ng;
  int64_t lo = g * l.gs, hi = imin(lo + l.gs, l.cols);
  const float *x = w + row * l.cols;
  uint32_t m = 0;
  for (int64_t k = lo; k < hi; k++) {
    uint32_t a = f2u(x[k]) & 0x7fffffffu;  // |x|: clears the sign, so |-0| = +0
    m = a > m ? a : m;
  }
  *amax_bits = m;
  if (m >= 0x7f800000u) {  // a NaN or Inf in the group
    for (int64_t k = lo; k < hi; k++) {
      if ((f2u(x[k]) & 0x7f800000u) == 0x7f800000u) {
        *nf_index = row * l.cols + k;
        break;
      }
    }
    *scale = 0;
    return ST_NONFINITE;
  }
  float amax = u2f(m);
  float s32 = f_div(amax, (float)l.qmax());  // one binary32 division, RNE
  uint16_t s16 = f16_from_f32(s32);          // RNE to binary16, subnormals kept
  if (s16 == 0x7c00u) {                      // +Inf: the scale does not fit
    *scale = s16;
    return ST_OVERFLOW;
  }
  if (s16 == 0 && m != 0) s16 = 0x0001u;  // underflow of a non-zero group: 2^-24
  *scale = s16;
  return ST_OK;
}

// §2 Quantize one element with its group's stored scale.
HD inline int32_t quant_code(float x, uint16_t sbits, int qmax) {
  float inv = 0.0f;
  if (sbits != 0) inv = f_div(1.0f, f32_from_f16(sbits));  // 1/s, RNE; 0 for a zero scale
  float v = f_mul(x, inv);                                 // one binary32 multiply
  float q = f_rint(v);                                     // round half to even
  float m = (float)qmax;
  if (q > m) q = m;  // saturate
  if (q < -m) q = -m;
  return (int32_t)q;
}

HD inline uint16_t scale_of(const uint16_t *scales, Layout l, int64_t row, int64_t c) {
  return scales[row * l.ng() + c / l.gs];
}

// The code at column k of a packed row.
HD inline int32_t code_at(const uint8_t *prow, int64_t k, bool int4) {
  if (!int4) return (int32_t)(int8_t)prow[k];
  uint32_t b = prow[k >> 1];
  uint32_t nib = (k & 1) ? (b >> 4) : (b & 0x0fu);
  return (int32_t)(nib ^ 8u) - 8;  // 4-bit two's complement
}

// INT8: one code per byte. INT4: byte j of a row packs columns 2j (low) and
// 2j+1 (high); an odd row's last high nibble is 0. Odd group sizes make a
// byte straddle two groups, so each column looks up its own scale.
HD inline uint8_t quant_byte(const float *w, const uint16_t *scales, Layout l, int64_t row,
                             int64_t j) {
  const float *x = w + row * l.cols;
  if (l.bits == 8) return (uint8_t)(int8_t)quant_code(x[j], scale_of(scales, l, row, j), 127);
  int64_t c0 = 2 * j, c1 = 2 * j + 1;
  uint32_t lo = (uint32_t)quant_code(x[c0], scale_of(scales, l, row, c0), 7) & 0x0fu;
  uint32_t hi = 0;
  if (c1 < l.cols) hi = (uint32_t)quant_code(x[c1], scale_of(scales, l, row, c1), 7) & 0x0fu;
  return (uint8_t)(lo | (hi << 4));
}

// §3 Dequantize one element: w = f32(q) * s.
HD inline float dequant_elem(const uint8_t *packed, const uint16_t *scales, Layout l, int64_t row,
                             int64_t c) {
  int32_t q = code_at(packed + row * l.row_bytes(), c, l.bits == 4);
  return f_mul((float)q, f32_from_f16(scale_of(scales, l, row, c)));
}

// §4 MatMul: the accumulator of lane `lane` of the output (m, n): the groups
// g ≡ lane (mod 32), ascending, each summed sequentially and then scaled.
HD inline float matmul_lane(const float *xrow, const uint8_t *prow, const uint16_t *srow, Layout l,
                            int lane) {
  bool int4 = l.bits == 4;
  int64_t ng = l.ng();
  float acc = 0.0f;
  for (int64_t g = lane; g < ng; g += 32) {
    int64_t lo = g * l.gs, hi = imin(lo + l.gs, l.cols);
    float s = 0.0f;
    for (int64_t k = lo; k < hi; k++) s = f_add(s, f_mul(xrow[k], (float)code_at(prow, k, int4)));
    float t = f_mul(s, f32_from_f16(srow[g]));
    acc = f_add(acc, t);
  }
  return acc;
}

// The deliberately wrong order for the self-test: one accumulator, groups
// ascending (what a naive sequential loop does).
HD inline float matmul_naive(const float *xrow, const uint8_t *prow, const uint16_t *srow,
                             Layout l) {
  bool int4 = l.bits == 4;
  float acc = 0.0f;
  for (int64_t g = 0; g < l.ng(); g++) {
    int64_t lo = g * l.gs, hi = imin(lo + l.gs, l.cols);
    float s = 0.0f;
    for (int64_t k = lo; k < hi; k++) s = f_add(s, f_mul(xrow[k], (float)code_at(prow, k, int4)));
    acc = f_add(acc, f_mul(s, f32_from_f16(srow[g])));
  }
  return acc;
}

// §5 Welford over one channel of a batch, tokens ascending, in binary64.
HD inline void welford_channel(const float *x, int64_t tokens, int64_t C, int64_t c,
                               double *mean_out, double *m2_out) {
  double mean = 0.0, m2 = 0.0;
  for (int64_t t = 0; t < tokens; t++) {
    double xf = (double)x[t * C + c];  // exact
    double n = (double)(t + 1);        // exact
    double d = d_sub(xf, mean);
    mean = d_add(mean, d_div(d, n));
    m2 = d_add(m2, d_mul(d, d_sub(xf, mean)));  // with the updated mean
  }
  *mean_out = mean;
  *m2_out = m2;
}

// §5 Chan's merge of a batch (nb, mean_b, m2_b) into (na, mean_a, m2_a), for
// na > 0 and nb > 0 (the other cases are a copy or a no-op, done by the caller).
HD inline void merge_channel(double na, double nb, double n, double *mean_a, double *m2_a,
                             double mean_b, double m2_b) {
  double d = d_sub(mean_b, *mean_a);
  double mean = d_add(*mean_a, d_div(d_mul(d, nb), n));
  double t = d_div(d_mul(d_mul(d_mul(d, d), na), nb), n);
  double m2 = d_add(d_add(*m2_a, m2_b), t);
  *mean_a = mean;
  *m2_a = m2;
}

// ---------------------------------------------------------------------------
// CUDA kernels: thin wrappers around the functions above.

#ifdef __CUDACC__

#define CK(call)                                                                     \
  do {                                                                               \
    cudaError_t err_ = (call);                                                       \
    if (err_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "CUDA error at %s:%d: %s: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(err_));                                        \
      std::exit(2);                                                                  \
    }                                                                                \
  } while (0)

__global__ void k_groupscales(const float *w, Layout l, uint16_t *scales, uint32_t *amax,
                              unsigned long long *nf_min, unsigned long long *ov_min) {
  int64_t n = l.rows * l.ng();
  for (int64_t fg = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; fg < n;
       fg += (int64_t)gridDim.x * blockDim.x) {
    int64_t nf = -1;
    uint16_t s;
    uint32_t a;
    int st = group_scale(w, l, fg, &s, &a, &nf);
    scales[fg] = s;
    amax[fg] = a;
    if (st == ST_NONFINITE) atomicMin(nf_min, (unsigned long long)nf);
    if (st == ST_OVERFLOW) atomicMin(ov_min, (unsigned long long)fg);
  }
}

__global__ void k_quantize(const float *w, const uint16_t *scales, Layout l, uint8_t *packed) {
  int64_t rb = l.row_bytes(), n = l.rows * rb;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    packed[i] = quant_byte(w, scales, l, i / rb, i % rb);
}

__global__ void k_dequantize(const uint8_t *packed, const uint16_t *scales, Layout l, float *w) {
  int64_t n = l.rows * l.cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    w[i] = dequant_elem(packed, scales, l, i / l.cols, i % l.cols);
}

// One warp per output y[m, n]: lane l owns groups l, l+32, …; the 32 lane
// sums are folded with the xor butterfly 16, 8, 4, 2, 1 and read at lane 0.
__global__ void k_matmul(const float *x, int64_t M, const uint8_t *packed, const uint16_t *scales,
                         Layout l, float *y) {
  int lane = threadIdx.x & 31;
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  int64_t N = l.rows, total = M * N;
  for (int64_t o = warp; o < total; o += warps) {  // uniform across the warp
    int64_t m = o / N, n = o % N;
    float acc = matmul_lane(x + m * l.cols, packed + n * l.row_bytes(), scales + n * l.ng(), l, lane);
    for (int off = 16; off > 0; off >>= 1)
      acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
    if (lane == 0) y[m * N + n] = acc;
  }
}

__global__ void k_matmul_naive(const float *x, int64_t M, const uint8_t *packed,
                               const uint16_t *scales, Layout l, float *y) {
  int64_t N = l.rows, total = M * N;
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    int64_t m = o / N, n = o % N;
    y[o] = matmul_naive(x + m * l.cols, packed + n * l.row_bytes(), scales + n * l.ng(), l);
  }
}

__global__ void k_welford(const float *x, int64_t tokens, int64_t C, double *mean, double *m2) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C;
       c += (int64_t)gridDim.x * blockDim.x)
    welford_channel(x, tokens, C, c, &mean[c], &m2[c]);
}

__global__ void k_merge(double na, double nb, double n, int64_t C, double *mean_a, double *m2_a,
                        const double *mean_b, const double *m2_b) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C;
       c += (int64_t)gridDim.x * blockDim.x)
    merge_channel(na, nb, n, &mean_a[c], &m2_a[c], mean_b[c], m2_b[c]);
}

// Exhaustive comparison of the conversion intrinsics with the software
// versions above (which the golden cases tie to the Go reference).
__global__ void k_f16_exhaustive(unsigned long long *mismatches, unsigned long long *first) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < (1ull << 32);
       i += (uint64_t)gridDim.x * blockDim.x) {
    uint32_t u = (uint32_t)i;
    if ((u & 0x7fffffffu) > 0x7f800000u) continue;  // NaN payloads are outside the contract
    uint16_t hw = __half_as_ushort(__float2half_rn(__uint_as_float(u)));
    if (hw != soft_f32_to_f16(u)) {
      atomicAdd(mismatches, 1ull);
      atomicMin(first, (unsigned long long)u);
    }
  }
}

__global__ void k_f16_widen(unsigned long long *mismatches, unsigned long long *first) {
  uint32_t h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= 65536u) return;
  if ((h & 0x7fffu) > 0x7c00u) return;  // NaN
  if (__float_as_uint(__half2float(__ushort_as_half((uint16_t)h))) != soft_f16_to_f32((uint16_t)h)) {
    atomicAdd(mismatches, 1ull);
    atomicMin(first, (unsigned long long)h);
  }
}

static int blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20;  // grid-stride loops cover the rest
  return (int)b;
}

static void sync_check() {
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
}

// A device copy of a host buffer.
template <typename T>
struct DevBuf {
  T *p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t nbytes) : bytes(nbytes) { CK(cudaMalloc((void **)&p, nbytes ? nbytes : 1)); }
  DevBuf(const void *src, size_t nbytes) : DevBuf(nbytes) {
    if (nbytes) CK(cudaMemcpy(p, src, nbytes, cudaMemcpyHostToDevice));
  }
  ~DevBuf() { CK(cudaFree(p)); }
  DevBuf(const DevBuf &) = delete;
  DevBuf &operator=(const DevBuf &) = delete;
  void poison() { CK(cudaMemset(p, 0xFF, bytes ? bytes : 1)); }  // 0xFF bytes: NaN / -1 patterns
  void to_host(void *dst) const {
    if (bytes) CK(cudaMemcpy(dst, p, bytes, cudaMemcpyDeviceToHost));
  }
};

#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// cases.bin reader.

struct Span {
  const uint8_t *p = nullptr;
  uint64_t n = 0;
  uint32_t dtype = 0;
};

struct Record {
  uint32_t kind = 0;
  std::string name;
  std::vector<int64_t> dims;
  std::vector<Span> in, out;
};

struct Reader {
  const uint8_t *p, *end;
  bool ok = true;
  std::string err;
  void fail(const std::string &e) {
    if (ok) err = e;
    ok = false;
  }
  bool need(uint64_t n) {
    if (!ok) return false;
    if ((uint64_t)(end - p) < n) {
      fail("truncated file");
      return false;
    }
    return true;
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    p += 4;
    return v;
  }
  uint64_t u64() {
    uint64_t lo = u32();
    uint64_t hi = u32();
    return lo | hi << 32;
  }
};

struct Cases {
  std::vector<uint8_t> data;
  std::vector<Span> bufs;
  std::vector<Record> recs;
};

static bool load_cases(const char *path, Cases *cs, std::string *err) {
  FILE *f = std::fopen(path, "rb");
  if (!f) {
    *err = std::string("cannot open ") + path;
    return false;
  }
  std::fseek(f, 0, SEEK_END);
  long size = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  if (size < 0) {
    std::fclose(f);
    *err = "cannot size the file";
    return false;
  }
  cs->data.resize((size_t)size);
  if (size && std::fread(cs->data.data(), 1, (size_t)size, f) != (size_t)size) {
    std::fclose(f);
    *err = "short read";
    return false;
  }
  std::fclose(f);
  Reader r{cs->data.data(), cs->data.data() + cs->data.size(), true, std::string()};
  if (!r.need(8) || std::memcmp(r.p, "MIXQCCK1", 8) != 0) {
    *err = "not a cases.bin file (bad magic)";
    return false;
  }
  r.p += 8;
  uint32_t version = r.u32(), nbufs = r.u32(), nrecs = r.u32();
  r.u32();
  if (r.ok && version != 1) r.fail("unsupported version " + std::to_string(version));
  for (uint32_t i = 0; i < nbufs && r.ok; i++) {
    Span s;
    s.dtype = r.u32();
    r.u32();
    s.n = r.u64();
    if (r.ok && dtype_size(s.dtype) == 0) r.fail("buffer " + std::to_string(i) + ": bad dtype");
    if (!r.need(s.n)) break;
    s.p = r.p;
    r.p += s.n;
    cs->bufs.push_back(s);
  }
  auto ref = [&](Span *out) {
    uint32_t id = r.u32();
    r.u32();
    uint64_t off = r.u64(), n = r.u64();
    if (!r.ok) return;
    if (id >= cs->bufs.size()) return r.fail("reference to a missing buffer");
    const Span &b = cs->bufs[id];
    if (off > b.n || n > b.n - off) return r.fail("reference outside its buffer");
    size_t es = dtype_size(b.dtype);
    if (off % es || n % es) return r.fail("reference not aligned to its elements");
    out->p = b.p + off;
    out->n = n;
    out->dtype = b.dtype;
  };
  for (uint32_t i = 0; i < nrecs && r.ok; i++) {
    Record rec;
    rec.kind = r.u32();
    uint32_t len = r.u32();
    if (!r.need(len)) break;
    rec.name.assign((const char *)r.p, len);
    r.p += len;
    uint32_t nd = r.u32();
    if (nd > 1024) r.fail("too many dims");
    for (uint32_t k = 0; k < nd && r.ok; k++) rec.dims.push_back((int64_t)r.u64());
    uint32_t nin = r.u32();
    if (nin > 4096) r.fail("too many inputs");
    rec.in.resize(nin);
    for (auto &s : rec.in) ref(&s);
    uint32_t nout = r.u32();
    if (nout > 4096) r.fail("too many outputs");
    rec.out.resize(nout);
    for (auto &s : rec.out) ref(&s);
    cs->recs.push_back(std::move(rec));
  }
  if (r.ok && r.p != r.end) r.fail("trailing bytes after the last record");
  if (!r.ok) {
    *err = r.err;
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Comparison.

static std::string hexval(const uint8_t *p, size_t es) {
  uint64_t v = 0;
  for (size_t i = 0; i < es; i++) v |= (uint64_t)p[i] << (8 * i);
  char buf[40];
  std::snprintf(buf, sizeof buf, "0x%0*" PRIx64, (int)(2 * es), v);
  return buf;
}

// Compares got with want element by element (by bits). Returns "" when equal.
static std::string compare(const char *what, const std::vector<uint8_t> &got, const Span &want) {
  size_t es = dtype_size(want.dtype);
  if (got.size() != want.n) {
    return std::string(what) + ": size " + std::to_string(got.size()) + " bytes, want " +
           std::to_string(want.n);
  }
  uint64_t n = want.n / es, first = n, count = 0;
  for (uint64_t i = 0; i < n; i++) {
    if (std::memcmp(got.data() + i * es, want.p + i * es, es) != 0) {
      if (first == n) first = i;
      count++;
    }
  }
  if (count == 0) return "";
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s: first difference at index %" PRIu64 ": got %s want %s (%" PRIu64
                " of %" PRIu64 " elements differ)",
                what, first, hexval(got.data() + first * es, es).c_str(),
                hexval(want.p + first * es, es).c_str(), count, n);
  return buf;
}

template <typename T>
static std::vector<uint8_t> as_bytes(const std::vector<T> &v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// ---------------------------------------------------------------------------
// Running the cases.

static bool g_host = false;  // run the host emulation instead of the GPU

struct Result {
  bool pass = true;
  std::string detail;  // the first failure
  void add(const std::string &e) {
    if (e.empty()) return;
    if (pass) detail = e;
    pass = false;
  }
};

static bool layout_of(const Record &r, Layout *l, std::string *err) {
  if (r.dims.size() < 4) {
    *err = "needs 4 dims";
    return false;
  }
  *l = Layout{r.dims[0], r.dims[1], r.dims[2], r.dims[3]};
  if (l->rows <= 0 || l->cols <= 0 || l->gs <= 0 || l->gs > 4096 || (l->bits != 8 && l->bits != 4) ||
      l->rows > (1ll << 31) || l->cols > (1ll << 31)) {
    *err = "impossible layout";
    return false;
  }
  return true;
}

static std::string shape_of(const Record &r) {
  char buf[256];
  if (r.kind == KIND_CHANNELSTATS && r.dims.size() >= 2) {
    std::string s = "C=" + std::to_string(r.dims[0]) + " batches=";
    for (size_t k = 2; k < r.dims.size(); k++) s += (k > 2 ? "+" : "") + std::to_string(r.dims[k]);
    return s;
  }
  if (r.dims.size() >= 4) {
    if (r.kind == KIND_MATMUL && r.dims.size() >= 5) {
      std::snprintf(buf, sizeof buf, "m=%" PRId64 " N=%" PRId64 " K=%" PRId64 " g%" PRId64 " int%" PRId64,
                    r.dims[4], r.dims[0], r.dims[1], r.dims[2], r.dims[3]);
    } else {
      std::snprintf(buf, sizeof buf, "%" PRId64 "x%" PRId64 " g%" PRId64 " int%" PRId64, r.dims[0],
                    r.dims[1], r.dims[2], r.dims[3]);
    }
    return buf;
  }
  return "?";
}

static bool sized(const Span &s, uint32_t dtype, uint64_t elems) {
  return s.dtype == dtype && s.n == elems * dtype_size(dtype);
}

// GroupScales (with or without an expected error).
static Result run_groupscales(const Record &r) {
  Result res;
  Layout l;
  std::string e;
  if (!layout_of(r, &l, &e)) return res.add(e), res;
  bool want_error = r.kind == KIND_GROUPSCALES_ERROR;
  uint64_t nel = (uint64_t)(l.rows * l.cols), ns = (uint64_t)(l.rows * l.ng());
  if (r.in.size() != 1 || !sized(r.in[0], DT_F32, nel) || r.out.size() != (want_error ? 1u : 2u) ||
      !sized(r.out.back(), DT_I64, 4) || (!want_error && !sized(r.out[0], DT_F16, ns)))
    return res.add("malformed record"), res;
  const float *w = (const float *)r.in[0].p;
  std::vector<uint16_t> scales(ns);
  std::vector<uint32_t> amax(ns);
  uint64_t nf_min = ~0ull, ov_min = ~0ull;
  uint32_t nf_value = 0;
  if (g_host) {
    for (uint64_t fg = 0; fg < ns; fg++) {
      int64_t nf = -1;
      int st = group_scale(w, l, (int64_t)fg, &scales[fg], &amax[fg], &nf);
      if (st == ST_NONFINITE) nf_min = std::min(nf_min, (uint64_t)nf);
      if (st == ST_OVERFLOW) ov_min = std::min(ov_min, fg);
    }
    if (nf_min != ~0ull) std::memcpy(&nf_value, &w[nf_min], 4);
  } else {
#ifdef __CUDACC__
    DevBuf<float> dw(r.in[0].p, r.in[0].n);
    DevBuf<uint16_t> ds(ns * 2);
    DevBuf<uint32_t> da(ns * 4);
    DevBuf<unsigned long long> dflags(16);
    ds.poison();
    da.poison();
    dflags.poison();  // all ones: "none"
    k_groupscales<<<blocks_for((int64_t)ns, 256), 256>>>(dw.p, l, ds.p, da.p, dflags.p, dflags.p + 1);
    sync_check();
    ds.to_host(scales.data());
    da.to_host(amax.data());
    unsigned long long flags[2];
    dflags.to_host(flags);
    nf_min = flags[0];
    ov_min = flags[1];
    if (nf_min != ~0ull) CK(cudaMemcpy(&nf_value, dw.p + nf_min, 4, cudaMemcpyDeviceToHost));
#endif
  }
  std::vector<int64_t> status(4, 0);
  if (nf_min != ~0ull) {
    status = {ST_NONFINITE, (int64_t)nf_min, 0, (int64_t)nf_value};
  } else if (ov_min != ~0ull) {
    status = {ST_OVERFLOW, (int64_t)(ov_min / l.ng()), (int64_t)(ov_min % l.ng()),
              (int64_t)amax[ov_min]};
  }
  if (!want_error) res.add(compare("scales", as_bytes(scales), r.out[0]));
  res.add(compare("error status {kind, index|row, group, bits}", as_bytes(status), r.out.back()));
  return res;
}

static Result run_quantize(const Record &r) {
  Result res;
  Layout l;
  std::string e;
  if (!layout_of(r, &l, &e)) return res.add(e), res;
  uint64_t nel = (uint64_t)(l.rows * l.cols), ns = (uint64_t)(l.rows * l.ng()),
           nb = (uint64_t)(l.rows * l.row_bytes());
  if (r.in.size() != 2 || !sized(r.in[0], DT_F32, nel) || !sized(r.in[1], DT_F16, ns) ||
      r.out.size() != 1 || !sized(r.out[0], DT_U8, nb))
    return res.add("malformed record"), res;
  std::vector<uint8_t> packed(nb);
  const float *w = (const float *)r.in[0].p;
  const uint16_t *s = (const uint16_t *)r.in[1].p;
  if (g_host) {
    int64_t rb = l.row_bytes();
    for (uint64_t i = 0; i < nb; i++) packed[i] = quant_byte(w, s, l, (int64_t)i / rb, (int64_t)i % rb);
  } else {
#ifdef __CUDACC__
    DevBuf<float> dw(r.in[0].p, r.in[0].n);
    DevBuf<uint16_t> ds(r.in[1].p, r.in[1].n);
    DevBuf<uint8_t> dp(nb);
    dp.poison();
    k_quantize<<<blocks_for((int64_t)nb, 256), 256>>>(dw.p, ds.p, l, dp.p);
    sync_check();
    dp.to_host(packed.data());
#endif
  }
  res.add(compare("packed", packed, r.out[0]));
  return res;
}

static Result run_dequantize(const Record &r) {
  Result res;
  Layout l;
  std::string e;
  if (!layout_of(r, &l, &e)) return res.add(e), res;
  uint64_t nel = (uint64_t)(l.rows * l.cols), ns = (uint64_t)(l.rows * l.ng()),
           nb = (uint64_t)(l.rows * l.row_bytes());
  if (r.in.size() != 2 || !sized(r.in[0], DT_U8, nb) || !sized(r.in[1], DT_F16, ns) ||
      r.out.size() != 1 || !sized(r.out[0], DT_F32, nel))
    return res.add("malformed record"), res;
  std::vector<float> w(nel);
  if (g_host) {
    const uint8_t *p = r.in[0].p;
    const uint16_t *s = (const uint16_t *)r.in[1].p;
    for (uint64_t i = 0; i < nel; i++) w[i] = dequant_elem(p, s, l, (int64_t)i / l.cols, (int64_t)i % l.cols);
  } else {
#ifdef __CUDACC__
    DevBuf<uint8_t> dp(r.in[0].p, r.in[0].n);
    DevBuf<uint16_t> ds(r.in[1].p, r.in[1].n);
    DevBuf<float> dw(nel * 4);
    dw.poison();
    k_dequantize<<<blocks_for((int64_t)nel, 256), 256>>>(dp.p, ds.p, l, dw.p);
    sync_check();
    dw.to_host(w.data());
#endif
  }
  res.add(compare("w", as_bytes(w), r.out[0]));
  return res;
}

static bool matmul_shapes(const Record &r, Layout *l, int64_t *M) {
  std::string e;
  if (!layout_of(r, l, &e) || r.dims.size() < 5 || r.dims[4] <= 0 || r.dims[4] > (1 << 20)) return false;
  *M = r.dims[4];
  uint64_t ns = (uint64_t)(l->rows * l->ng()), nb = (uint64_t)(l->rows * l->row_bytes());
  return r.in.size() == 3 && sized(r.in[0], DT_F32, (uint64_t)(*M * l->cols)) &&
         sized(r.in[1], DT_U8, nb) && sized(r.in[2], DT_F16, ns) && r.out.size() == 1 &&
         sized(r.out[0], DT_F32, (uint64_t)(*M * l->rows));
}

// naive = false: the canonical order (warp butterfly on the GPU, its exact
// emulation on the host); naive = true: the sequential order of the self-test.
static std::vector<float> matmul(const Record &r, Layout l, int64_t M, bool naive) {
  int64_t N = l.rows;
  std::vector<float> y((size_t)(M * N));
  const float *x = (const float *)r.in[0].p;
  const uint8_t *p = r.in[1].p;
  const uint16_t *s = (const uint16_t *)r.in[2].p;
  if (g_host) {
    for (int64_t m = 0; m < M; m++) {
      for (int64_t n = 0; n < N; n++) {
        const float *xr = x + m * l.cols;
        const uint8_t *pr = p + n * l.row_bytes();
        const uint16_t *sr = s + n * l.ng();
        if (naive) {
          y[m * N + n] = matmul_naive(xr, pr, sr, l);
          continue;
        }
        float acc[32], nxt[32];
        for (int lane = 0; lane < 32; lane++) acc[lane] = matmul_lane(xr, pr, sr, l, lane);
        for (int off = 16; off > 0; off >>= 1) {  // what __shfl_xor_sync does, lane by lane
          for (int lane = 0; lane < 32; lane++) nxt[lane] = f_add(acc[lane], acc[lane ^ off]);
          std::memcpy(acc, nxt, sizeof acc);
        }
        y[m * N + n] = acc[0];
      }
    }
  } else {
#ifdef __CUDACC__
    DevBuf<float> dx(r.in[0].p, r.in[0].n);
    DevBuf<uint8_t> dp(r.in[1].p, r.in[1].n);
    DevBuf<uint16_t> ds(r.in[2].p, r.in[2].n);
    DevBuf<float> dy((size_t)(M * N) * 4);
    dy.poison();
    if (naive) {
      k_matmul_naive<<<blocks_for(M * N, 256), 256>>>(dx.p, M, dp.p, ds.p, l, dy.p);
    } else {
      k_matmul<<<blocks_for(M * N * 32, 256), 256>>>(dx.p, M, dp.p, ds.p, l, dy.p);
    }
    sync_check();
    dy.to_host(y.data());
#endif
  }
  return y;
}

static Result run_matmul(const Record &r) {
  Result res;
  Layout l;
  int64_t M;
  if (!matmul_shapes(r, &l, &M)) return res.add("malformed record"), res;
  res.add(compare("y", as_bytes(matmul(r, l, M, false)), r.out[0]));
  return res;
}

static Result run_channelstats(const Record &r) {
  Result res;
  if (r.dims.size() < 2 || r.dims[0] <= 0 || r.dims[1] <= 0 || r.dims.size() != (size_t)(2 + r.dims[1]))
    return res.add("malformed record"), res;
  int64_t C = r.dims[0], nb = r.dims[1];
  if (r.in.size() != (size_t)nb || r.out.size() != (size_t)(3 * nb)) return res.add("malformed record"), res;
  for (int64_t k = 0; k < nb; k++) {
    int64_t tokens = r.dims[2 + k];
    if (tokens < 0 || !sized(r.in[k], DT_F32, (uint64_t)(tokens * C)) || !sized(r.out[3 * k], DT_I64, 1) ||
        !sized(r.out[3 * k + 1], DT_F64, (uint64_t)C) || !sized(r.out[3 * k + 2], DT_F64, (uint64_t)C))
      return res.add("malformed record"), res;
  }
  int64_t count = 0;
  std::vector<double> mean(C), m2(C), bmean(C), bm2(C);
#ifdef __CUDACC__
  DevBuf<double> *dmean = nullptr, *dm2 = nullptr, *dbmean = nullptr, *dbm2 = nullptr;
  if (!g_host) {
    dmean = new DevBuf<double>(C * 8);
    dm2 = new DevBuf<double>(C * 8);
    dbmean = new DevBuf<double>(C * 8);
    dbm2 = new DevBuf<double>(C * 8);
    dmean->poison();  // the running statistics are written before they are read
    dm2->poison();
  }
#endif
  for (int64_t k = 0; k < nb; k++) {
    int64_t tokens = r.dims[2 + k];
    const float *x = (const float *)r.in[k].p;
    if (tokens > 0) {  // an empty batch merges as a no-op
      double na = (double)count, nbd = (double)tokens, n = (double)(count + tokens);
      if (g_host) {
        for (int64_t c = 0; c < C; c++) welford_channel(x, tokens, C, c, &bmean[c], &bm2[c]);
        if (count == 0) {
          mean = bmean;  // copy: no rounding
          m2 = bm2;
        } else {
          for (int64_t c = 0; c < C; c++) merge_channel(na, nbd, n, &mean[c], &m2[c], bmean[c], bm2[c]);
        }
      } else {
#ifdef __CUDACC__
        DevBuf<float> dx(r.in[k].p, r.in[k].n);
        dbmean->poison();
        dbm2->poison();
        k_welford<<<blocks_for(C, 128), 128>>>(dx.p, tokens, C, dbmean->p, dbm2->p);
        sync_check();
        if (count == 0) {
          CK(cudaMemcpy(dmean->p, dbmean->p, C * 8, cudaMemcpyDeviceToDevice));
          CK(cudaMemcpy(dm2->p, dbm2->p, C * 8, cudaMemcpyDeviceToDevice));
        } else {
          k_merge<<<blocks_for(C, 128), 128>>>(na, nbd, n, C, dmean->p, dm2->p, dbmean->p, dbm2->p);
          sync_check();
        }
#endif
      }
      count += tokens;
    }
#ifdef __CUDACC__
    if (!g_host && count > 0) {
      dmean->to_host(mean.data());
      dm2->to_host(m2.data());
    }
#endif
    std::string after = "after batch " + std::to_string(k) + ": ";
    res.add(compare((after + "count").c_str(), as_bytes(std::vector<int64_t>{count}), r.out[3 * k]));
    if (count > 0) {
      res.add(compare((after + "mean").c_str(), as_bytes(mean), r.out[3 * k + 1]));
      res.add(compare((after + "M2").c_str(), as_bytes(m2), r.out[3 * k + 2]));
    } else {  // nothing seen yet: the reference holds zeros
      res.add(compare((after + "mean").c_str(), as_bytes(std::vector<double>(C, 0.0)), r.out[3 * k + 1]));
      res.add(compare((after + "M2").c_str(), as_bytes(std::vector<double>(C, 0.0)), r.out[3 * k + 2]));
    }
  }
#ifdef __CUDACC__
  delete dmean;
  delete dm2;
  delete dbmean;
  delete dbm2;
#endif
  return res;
}

static Result run_record(const Record &r) {
  switch (r.kind) {
    case KIND_GROUPSCALES:
    case KIND_GROUPSCALES_ERROR: return run_groupscales(r);
    case KIND_QUANTIZE: return run_quantize(r);
    case KIND_DEQUANTIZE: return run_dequantize(r);
    case KIND_MATMUL: return run_matmul(r);
    case KIND_CHANNELSTATS: return run_channelstats(r);
  }
  Result res;
  res.add("unknown record kind " + std::to_string(r.kind));
  return res;
}

// ---------------------------------------------------------------------------

static int passed = 0, failed = 0;

static void report(const char *kind, const std::string &name, const std::string &shape, const Result &res) {
  std::printf("%-4s  %-17s  %-64s  [%s]%s%s\n", res.pass ? "PASS" : "FAIL", kind, name.c_str(),
              shape.c_str(), res.pass ? "" : "  ", res.detail.c_str());
  std::fflush(stdout);
  (res.pass ? passed : failed)++;
}

// Self-tests: the checker must be able to fail.
static void self_tests(const Cases &cs) {
  // 1. Comparator: a copy of an expected buffer with one bit flipped must be
  // reported, at the right index.
  {
    Result res;
    const Record *rec = nullptr;
    for (const auto &r : cs.recs)
      if (r.kind == KIND_MATMUL) rec = &r;
    if (!rec) {
      res.add("no matmul record");
    } else {
      const Span &want = rec->out[0];
      std::vector<uint8_t> bad(want.p, want.p + want.n);
      uint64_t idx = (want.n / 4) / 2;
      bad[idx * 4] ^= 1;
      std::string e = compare("y", bad, want);
      std::string expect = "first difference at index " + std::to_string(idx) + ":";
      if (e.find(expect) == std::string::npos) res.add("the comparator missed a flipped bit: '" + e + "'");
      std::vector<uint8_t> good(want.p, want.p + want.n);
      if (!compare("y", good, want).empty()) res.add("the comparator rejected an exact copy");
    }
    report("selftest", "selftest/comparator-detects-one-flipped-bit", "-", res);
  }
  // 2. Summation order: the naive sequential sum over groups must differ
  // from the canonical 32-lane order on some outputs of a large case.
  {
    const Record *best = nullptr;
    double best_work = -1;
    for (const auto &r : cs.recs) {
      Layout l;
      int64_t M;
      if (r.kind != KIND_MATMUL || !matmul_shapes(r, &l, &M) || l.ng() < 32) continue;
      double work = (double)M * (double)l.rows;
      if (work > best_work) best = &r, best_work = work;
    }
    if (!best) {
      std::printf("INFO  self-test: no matmul case with 32 or more groups per row\n");
      return;
    }
    Layout l;
    int64_t M;
    matmul_shapes(*best, &l, &M);
    std::vector<float> naive = matmul(*best, l, M, true);
    const Span &want = best->out[0];
    uint64_t n = want.n / 4, diff = 0, first = n;
    for (uint64_t i = 0; i < n; i++)
      if (std::memcmp(&naive[i], want.p + 4 * i, 4) != 0) {
        if (first == n) first = i;
        diff++;
      }
    std::printf("INFO  self-test: a naive sequential sum over the groups (one accumulator) differs from the "
                "canonical 32-lane order on %" PRIu64 " of %" PRIu64 " outputs of %s [%s]",
                diff, n, best->name.c_str(), shape_of(*best).c_str());
    if (diff) {
      std::printf("; e.g. index %" PRIu64 ": naive %s, canonical %s\n", first,
                  hexval((const uint8_t *)&naive[first], 4).c_str(), hexval(want.p + 4 * first, 4).c_str());
    } else {
      std::printf(" -- WARNING: this case cannot tell the two orders apart\n");
    }
  }
}

#if !defined(__CUDACC__) && defined(__FLT16_MAX__)
// Host build: check the software conversions against the compiler's _Float16.
static void host_f16_exhaustive() {
  Result res;
  uint64_t bad = 0, first = 0;
  for (uint64_t i = 0; i < (1ull << 32); i++) {
    uint32_t u = (uint32_t)i;
    if ((u & 0x7fffffffu) > 0x7f800000u) continue;
    _Float16 h = (_Float16)u2f(u);
    uint16_t hb;
    std::memcpy(&hb, &h, 2);
    if (hb != soft_f32_to_f16(u) && bad++ == 0) first = u;
  }
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7fffu) > 0x7c00u) continue;
    _Float16 v;
    uint16_t hb = (uint16_t)h;
    std::memcpy(&v, &hb, 2);
    if (f2u((float)v) != soft_f16_to_f32(hb) && bad++ == 0) first = h;
  }
  if (bad) res.add(std::to_string(bad) + " mismatches, first input " + hexval((const uint8_t *)&first, 4));
  report("f16", "f16/software-conversions-vs-_Float16-exhaustive", "2^32 f32 + 2^16 f16 inputs, NaN excluded", res);
}
#endif

int main(int argc, char **argv) {
  const char *path = nullptr;
  bool f16_exhaustive = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--host") {
      g_host = true;
    } else if (a == "--f16-exhaustive") {
      f16_exhaustive = true;
    } else if (!a.empty() && a[0] != '-' && !path) {
      path = argv[i];
    } else {
      path = nullptr;
      break;
    }
  }
  if (!path) {
    std::fprintf(stderr, "usage: %s [--host] [--f16-exhaustive] cases.bin\n", argv[0]);
    return 2;
  }
#ifndef __CUDACC__
  g_host = true;
#endif

  if (g_host) {
    std::printf("mode: host emulation (the kernels' per-element code on the CPU, plain IEEE operations)\n");
  } else {
#ifdef __CUDACC__
    int dev = 0;
    CK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    int rt = 0, drv = 0;
    CK(cudaRuntimeGetVersion(&rt));
    CK(cudaDriverGetVersion(&drv));
    std::printf("mode: gpu: device %d: %s, compute capability %d.%d; CUDA runtime %d, driver %d; built with nvcc %d.%d\n",
                dev, prop.name, prop.major, prop.minor, rt, drv, __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__);
#endif
  }

  Cases cs;
  std::string err;
  if (!load_cases(path, &cs, &err)) {
    std::printf("FAIL  cannot read %s: %s\n0 passed, 1 failed\n", path, err.c_str());
    return 1;
  }
  std::printf("read %s: %zu bytes, %zu buffers, %zu cases\n", path, cs.data.size(), cs.bufs.size(),
              cs.recs.size());

  for (const auto &r : cs.recs) report(kind_name(r.kind), r.name, shape_of(r), run_record(r));

  if (!g_host) {
#ifdef __CUDACC__
    // __float2half_rn and __half2float against the software conversions,
    // over every non-NaN input.
    DevBuf<unsigned long long> d(32);
    unsigned long long h[4] = {0, ~0ull, 0, ~0ull};
    CK(cudaMemcpy(d.p, h, 32, cudaMemcpyHostToDevice));
    k_f16_exhaustive<<<1 << 16, 256>>>(d.p, d.p + 1);
    sync_check();
    k_f16_widen<<<256, 256>>>(d.p + 2, d.p + 3);
    sync_check();
    d.to_host(h);
    Result r1, r2;
    if (h[0]) r1.add(std::to_string(h[0]) + " mismatches, first input " + hexval((const uint8_t *)&h[1], 4));
    if (h[2]) r2.add(std::to_string(h[2]) + " mismatches, first input " + hexval((const uint8_t *)&h[3], 2));
    report("f16", "f16/__float2half_rn-vs-software-RNE-exhaustive", "2^32 inputs, NaN excluded", r1);
    report("f16", "f16/__half2float-vs-software-exhaustive", "2^16 inputs, NaN excluded", r2);
#endif
  } else if (f16_exhaustive) {
#if !defined(__CUDACC__) && defined(__FLT16_MAX__)
    host_f16_exhaustive();
#else
    std::printf("INFO  --f16-exhaustive needs a host compiler with _Float16\n");
#endif
  }

  self_tests(cs);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
