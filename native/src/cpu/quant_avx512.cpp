// quant_avx512.cpp — AVX-512 quantization of full 4-bit blocks (built with AVX-512 flags; called
// only when state(ctx).avx512). Same codes and absmax as quant.cpp's path, bit for bit:
//   - absmax: max |x| over the block; a NaN element is skipped as std::max(amax, |x|) skips it
//     (vmaxps returns its second operand when the first is NaN);
//   - the code rank (the number of sorted midpoints strictly below the scaled value) found by a
//     4-step binary search, 16 lanes at a time, instead of 15 compares 8 lanes at a time: the
//     predicate "midpoint[k] < v" is monotone in k, so both count the same k; a NaN compares
//     false everywhere and ranks 0 in both.
// A 7B checkpoint's first start quantizes 6.5 billion weights: this is most of its time.
// GCC 12 flags the _mm512_undefined_*() placeholders inside its own intrinsics (a false
// positive of -Wmaybe-uninitialized), as in matmul4_avx512.cpp.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "common/quant_math.h"
#include "cpu/linalg.h"

namespace ql::cpu {

static inline __m512 load16(const void* x, int32_t dtype, uint64_t i) {
  if (dtype == QL_F32) return _mm512_loadu_ps(static_cast<const float*>(x) + i);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(x) + i));
  if (dtype == QL_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

float quantize_block_avx512(uint8_t* packed, const void* x, int32_t dtype, uint64_t start, int blocksize,
                            const Codebook& cb) {
  __m512 m = _mm512_setzero_ps();
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int i = 0; i < blocksize; i += 16) m = _mm512_max_ps(_mm512_and_ps(load16(x, dtype, start + i), abs_mask), m);
  const float amax = _mm512_reduce_max_ps(m);
  const float a = amax > 1e-38f ? amax : 1e-38f;
  const __m512 inv = _mm512_set1_ps(1.0f / a);
  const __m512 one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f);
  alignas(64) float mid16[16];
  for (int k = 0; k < 15; k++) mid16[k] = cb.midpoint[k];
  mid16[15] = cb.midpoint[14];  // never selected: the search's largest index is 14
  const __m512 mid = _mm512_load_ps(mid16);
  alignas(64) int32_t code16[16];
  for (int k = 0; k < 16; k++) code16[k] = cb.sorted_code[k];
  const __m512i code = _mm512_load_si512(code16);
  for (int i = 0; i < blocksize; i += 16) {
    __m512 v = _mm512_mul_ps(load16(x, dtype, start + i), inv);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, minus_one, _CMP_LT_OQ), v, minus_one);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, one, _CMP_GT_OQ), v, one);
    __m512i rank = _mm512_setzero_si512();
    for (int step = 8; step >= 1; step >>= 1) {
      const __m512i probe = _mm512_add_epi32(rank, _mm512_set1_epi32(step - 1));
      const __mmask16 below = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(probe, mid), v, _CMP_LT_OQ);
      rank = _mm512_mask_add_epi32(rank, below, rank, _mm512_set1_epi32(step));
    }
    // codes as 32-bit lanes; each 64-bit pair (c[2j], c[2j+1]) becomes the byte c[2j] << 4 | c[2j+1]
    const __m512i c = _mm512_permutexvar_epi32(rank, code);
    const __m512i pair = _mm512_or_si512(_mm512_slli_epi64(c, 4), _mm512_srli_epi64(c, 32));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(packed + (start + i) / 2), _mm512_cvtepi64_epi8(pair));
  }
  return amax;
}

}  // namespace ql::cpu
