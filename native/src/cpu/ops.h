// ops.h — the CPU backend's transformer ops (embedding, RMSNorm, RoPE, KV cache, attention,
// SwiGLU, add, cross-entropy, sum of squares, scale, top-k) and the small AVX2 helpers they
// share: row conversion between F32/BF16 activations and f32 scratch, a vectorized exp and a
// horizontal sum. Activations in BF16 are loaded as f32, computed in f32 and stored rounded.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/cpu.h"
#include "common/half.h"

namespace ql::cpu {

// ---------------------------------------------------------------- helpers

inline size_t act_size(int32_t dtype) { return dtype == QL_F32 ? 4 : 2; }

// Pointer to element i of an activation buffer.
inline const void* elem(const void* p, int32_t dtype, int64_t i) {
  return static_cast<const char*>(p) + i * int64_t(act_size(dtype));
}
inline void* elem(void* p, int32_t dtype, int64_t i) {
  return static_cast<char*>(p) + i * int64_t(act_size(dtype));
}

// 8 bf16 values -> 8 floats.
inline __m256 bf16x8_to_f32(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 8 floats -> 8 bf16 (round to nearest even, NaN kept quiet), bit-identical to f32_to_bf16.
inline __m128i f32x8_to_bf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
  r = _mm256_srli_epi32(r, 16);
  const __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, qn, nan);
  r = _mm256_and_si256(r, _mm256_set1_epi32(0xffff));
  __m256i packed = _mm256_packus_epi32(r, r);  // per 128-bit lane
  packed = _mm256_permute4x64_epi64(packed, 0x08);
  return _mm256_castsi256_si128(packed);
}

inline __m256 load8(const void* p, int32_t dtype, int64_t i) {
  if (dtype == QL_F32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  return bf16x8_to_f32(static_cast<const uint16_t*>(p) + i);
}
inline void store8(void* p, int32_t dtype, int64_t i, __m256 v) {
  if (dtype == QL_F32)
    _mm256_storeu_ps(static_cast<float*>(p) + i, v);
  else
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i), f32x8_to_bf16(v));
}

// dst[0..n) f32 <- src elements [off, off + n) of dtype.
inline void load_row(float* dst, const void* src, int32_t dtype, int64_t off, int64_t n) {
  if (dtype == QL_F32) {
    memcpy(dst, static_cast<const float*>(src) + off, size_t(n) * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src) + off;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, bf16x8_to_f32(s + i));
  for (; i < n; i++) dst[i] = bf16_to_f32(s[i]);
}

// dst elements [off, off + n) of dtype <- src f32 (rounded for BF16).
inline void store_row(void* dst, int32_t dtype, int64_t off, const float* src, int64_t n) {
  if (dtype == QL_F32) {
    memmove(static_cast<float*>(dst) + off, src, size_t(n) * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), f32x8_to_bf16(_mm256_loadu_ps(src + i)));
  for (; i < n; i++) d[i] = f32_to_bf16(src[i]);
}

// dst elements [off, off + n) += src (f32 arithmetic, one rounding for BF16).
inline void accumulate_row(void* dst, int32_t dtype, int64_t off, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    store8(dst, dtype, off + i, _mm256_add_ps(load8(dst, dtype, off + i), _mm256_loadu_ps(src + i)));
  for (; i < n; i++)
    store_from_f32(dst, dtype, off + i, load_as_f32(dst, dtype, off + i) + src[i]);
}

inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline float hmax(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// e^x for 8 floats (Cephes polynomial, relative error ~2e-7); 0 below -87.3, +inf above 88.7.
inline __m256 exp8(__m256 x) {
  const __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  const __m256 too_big = _mm256_cmp_ps(x, _mm256_set1_ps(88.7f), _CMP_GT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.7f)), _mm256_set1_ps(-87.3f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n split in two factors so n = 128 (x near 88.7) stays representable.
  const __m256i n = _mm256_cvtps_epi32(fx);
  const __m256i n1 = _mm256_srai_epi32(n, 1);
  const __m256i n2 = _mm256_sub_epi32(n, n1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_andnot_ps(too_small, y);
  return _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), too_big);
}

// Scalar twin of exp8 (used for tails so vector and tail lanes agree closely).
inline float exp1(float x) {
  float buf[8] = {x, 0, 0, 0, 0, 0, 0, 0};
  _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
  return buf[0];
}

// Σ a[i] * b[i] over n floats (f32, FMA).
inline float dot_f32(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; i++) s = std::fma(a[i], b[i], s);
  return s;
}

// y[i] += a * x[i] over n floats.
inline void axpy_f32(float* y, float a, const float* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] = std::fma(a, x[i], y[i]);
}

// y[i] *= a over n floats.
inline void scal_f32(float* y, float a, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] *= a;
}

}  // namespace ql::cpu
