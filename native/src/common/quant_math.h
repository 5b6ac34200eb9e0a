// quant_math.h — the 4-bit and 8-bit blockwise quantization rules, shared by every backend
// (host C++, nvcc device code and the CUDA emulation). Bit-exact with bitsandbytes'
// reference semantics (shared/reference/README.md):
//   scaled = clamp(x * (1/max(absmax, 1e-38)), -1, 1)  (full blocks; the partial last block
//            divides instead), code = number of sorted-codebook midpoints strictly below
//            scaled (a value on a midpoint takes the lower code), mapped back to the code.
// Arithmetic here must not be contracted into FMAs: host files build with -ffp-contract=off
// and device code uses the explicitly rounded intrinsics below.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
// nvcc's front end reads "unroll" in both passes (and rejects "GCC unroll"); its host compiler
// does not know the pragma, hence -Wno-unknown-pragmas in the nvcc flags.
#define QL_HD __host__ __device__ __forceinline__
#define QL_UNROLL _Pragma("unroll")
#else
#define QL_HD inline
#define QL_UNROLL _Pragma("GCC unroll 8")
#endif

namespace ql {

// Blocksizes are powers of two in [kMinBlocksize, kMaxBlocksize] (the api checks; kernels size
// per-block buffers by the maximum).
constexpr int kMinBlocksize = 32, kMaxBlocksize = 4096;

QL_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QL_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QL_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Codebooks indexed by code. FP4: bit 3 is the sign.
struct Codebook {
  float value[16];      // code -> value
  float midpoint[15];   // midpoints of the values sorted ascending
  uint8_t sorted_code[16];  // rank in ascending order -> code
};

// The three codebooks, with midpoints precomputed in float32 exactly as (a + b) / 2.
// Index by ql_quant_type. For FP4, +0.0 (code 0) sorts before -0.0 (code 8) (stable sort),
// so zero blocks get code 0.
#define QL_NF4_VALUES                                                                          \
  {-1.0f, -0.696192801f, -0.525073051f, -0.394917488f, -0.284441382f, -0.18477343f,           \
   -0.0910500363f, 0.0f, 0.0795802996f, 0.160930201f, 0.246112302f, 0.337915242f,             \
   0.440709829f, 0.562617004f, 0.722956836f, 1.0f}
#define QL_FP4_VALUES                                                                          \
  {0.0f, 0.00520833349f, 0.666666687f, 1.0f, 0.333333343f, 0.5f, 0.166666672f, 0.25f, -0.0f,  \
   -0.00520833349f, -0.666666687f, -1.0f, -0.333333343f, -0.5f, -0.166666672f, -0.25f}
// Symmetric absmax INT4: code c -> (c - 8) / 7, so codes 1..15 cover [-1, 1] in 15 even
// steps (code 0, -8/7, lies outside the clamp range and is never produced).
#define QL_INT4_VALUES                                                                         \
  {-8.0f / 7.0f, -1.0f, -6.0f / 7.0f, -5.0f / 7.0f, -4.0f / 7.0f, -3.0f / 7.0f, -2.0f / 7.0f, \
   -1.0f / 7.0f, 0.0f, 1.0f / 7.0f, 2.0f / 7.0f, 3.0f / 7.0f, 4.0f / 7.0f, 5.0f / 7.0f,       \
   6.0f / 7.0f, 1.0f}

// Host-side construction of a Codebook (sorts, stable, and computes float32 midpoints).
inline Codebook make_codebook(const float (&values)[16]) {
  Codebook cb{};
  for (int i = 0; i < 16; i++) cb.value[i] = values[i];
  uint8_t order[16];
  for (int i = 0; i < 16; i++) order[i] = uint8_t(i);
  // insertion sort: stable, ascending by value (-0.0 == 0.0 keeps code order)
  for (int i = 1; i < 16; i++) {
    uint8_t o = order[i];
    int j = i - 1;
    while (j >= 0 && values[order[j]] > values[o]) {
      order[j + 1] = order[j];
      j--;
    }
    order[j + 1] = o;
  }
  for (int i = 0; i < 16; i++) cb.sorted_code[i] = order[i];
  for (int i = 0; i < 15; i++)
    cb.midpoint[i] = (values[order[i]] + values[order[i + 1]]) / 2.0f;
  return cb;
}

inline const Codebook& codebook(int quant_type) {
  static const float nf4[16] = QL_NF4_VALUES;
  static const float fp4[16] = QL_FP4_VALUES;
  static const float int4[16] = QL_INT4_VALUES;
  static const Codebook books[3] = {make_codebook(nf4), make_codebook(fp4), make_codebook(int4)};
  return books[quant_type];
}

// The signed dynamic map (256 entries, ascending) and its 255 midpoints.
struct DynamicMap {
  float value[256];
  float midpoint[255];
};
inline const DynamicMap& dynamic_map() {
  static const DynamicMap map = [] {
    static const float v[256] = {
#include "dynamic_map.inc"
    };
    DynamicMap m{};
    for (int i = 0; i < 256; i++) m.value[i] = v[i];
    for (int i = 0; i < 255; i++) m.midpoint[i] = (v[i] + v[i + 1]) / 2.0f;
    return m;
  }();
  return map;
}

// Number of midpoints strictly below v (torch.bucketize, right=False), branch-free binary
// search over `count` ascending midpoints (count = 15 or 255).
template <int COUNT>
QL_HD int bucketize(const float* midpoint, float v) {
  int lo = 0;  // answer in [0, COUNT]
QL_UNROLL
  for (int step = 128; step > 0; step >>= 1) {
    if (step <= COUNT) {
      int probe = lo + step;
      if (probe <= COUNT && midpoint[probe - 1] < v) lo = probe;
    }
  }
  return lo;
}

// Scaled value for element x of a block: the full-block form multiplies by the float32
// reciprocal, the partial last block divides (bitsandbytes' reference does both).
QL_HD float scale_into_unit(float x, float absmax, bool full_block) {
  float a = absmax > 1e-38f ? absmax : 1e-38f;
  float s = full_block ? mul_rn(x, div_rn(1.0f, a)) : div_rn(x, a);
  return s < -1.0f ? -1.0f : (s > 1.0f ? 1.0f : s);
}

QL_HD uint8_t quantize_4bit_value(const float* midpoint15, const uint8_t* sorted_code, float scaled) {
  return sorted_code[bucketize<15>(midpoint15, scaled)];
}

QL_HD uint8_t quantize_8bit_value(const float* midpoint255, float scaled) {
  return uint8_t(bucketize<255>(midpoint255, scaled));
}

// absmax from double quantization: dyn[q] * absmax2 + offset, two roundings (no FMA).
QL_HD float dequant_absmax(const float* dyn, uint8_t q, float absmax2, float offset) {
  return add_rn(mul_rn(dyn[q], absmax2), offset);
}

}  // namespace ql
