// matmul4_avx512.cpp — AVX-512 kernels of the 4-bit matmul (built with AVX-512 flags; called
// only when state(ctx).avx512). See matmul4.cpp for the layout of the arranged X.
// GCC 12 flags the _mm512_undefined_*() placeholders inside its own intrinsics (a false
// positive of -Wmaybe-uninitialized); silence it for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "common/quant_math.h"
#include "cpu/linalg.h"

namespace ql::cpu {

static inline float hsum16(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// Rows [r0, r1) of y [M, rows] for the arranged x [M, cols] (chunks of 32 = 16 even | 16 odd).
constexpr int64_t kPrefetchBytes = 4096;

template <int M>
static void matvec4_rows(const ql_qweight* w, const float* xp, float* y, int64_t r0, int64_t r1) {
  const QWeight& q = qw(w);
  const __m512 cb = _mm512_loadu_ps(codebook(w->quant_type).value);
  const int64_t cols = w->cols, rows = w->rows, bs = w->blocksize;
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  constexpr int U = M <= 2 ? 2 : 1;  // independent accumulator sets (latency hiding for few rows)
  const int lg = __builtin_ctzll(uint64_t(bs));  // blocksize is a power of two
  for (int64_t r = r0; r < r1; r++) {
    __m512 ae[U][M], ao[U][M];
    for (int u = 0; u < U; u++)
      for (int i = 0; i < M; i++) ae[u][i] = ao[u][i] = _mm512_setzero_ps();
    const int64_t flat = r * cols;
    const uint8_t* prow = packed + (flat >> 1);
    // chunks of 32 never straddle a block (cols % 32 == 0, blocksize >= 32)
    int64_t cur_b = -1;
    __m512 lut = cb;
    int64_t j = 0;
    for (; j + 32 * U <= cols; j += 32 * U) {
      // software prefetch well ahead of the stream (helps one thread keep enough misses in flight)
      _mm_prefetch(reinterpret_cast<const char*>(prow + (j >> 1) + kPrefetchBytes), _MM_HINT_T0);
      for (int u = 0; u < U; u++) {
        const int64_t jj = j + 32 * u;
        const int64_t b = (flat + jj) >> lg;
        if (b != cur_b) {
          lut = _mm512_mul_ps(cb, _mm512_set1_ps(absmax[b]));
          cur_b = b;
        }
        const __m512i d = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(prow + (jj >> 1))));
        const __m512 we = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), lut);
        const __m512 wo = _mm512_permutexvar_ps(d, lut);
        for (int i = 0; i < M; i++) {
          ae[u][i] = _mm512_fmadd_ps(we, _mm512_loadu_ps(xp + i * cols + jj), ae[u][i]);
          ao[u][i] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xp + i * cols + jj + 16), ao[u][i]);
        }
      }
    }
    for (; j < cols; j += 32) {
      const int64_t b = (flat + j) >> lg;
      if (b != cur_b) {
        lut = _mm512_mul_ps(cb, _mm512_set1_ps(absmax[b]));
        cur_b = b;
      }
      const __m512i d = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(prow + (j >> 1))));
      const __m512 we = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), lut);
      const __m512 wo = _mm512_permutexvar_ps(d, lut);
      for (int i = 0; i < M; i++) {
        ae[0][i] = _mm512_fmadd_ps(we, _mm512_loadu_ps(xp + i * cols + j), ae[0][i]);
        ao[0][i] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xp + i * cols + j + 16), ao[0][i]);
      }
    }
    for (int i = 0; i < M; i++) {
      __m512 s = _mm512_add_ps(ae[0][i], ao[0][i]);
      for (int u = 1; u < U; u++) s = _mm512_add_ps(s, _mm512_add_ps(ae[u][i], ao[u][i]));
      y[i * rows + r] = hsum16(s);
    }
  }
}

void matvec4_avx512(const ql_qweight* w, const float* xp, float* y, int64_t m, int nthreads) {
  const int64_t rows = w->rows;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    switch (m) {
      case 1: matvec4_rows<1>(w, xp, y, r0, r1); break;
      case 2: matvec4_rows<2>(w, xp, y, r0, r1); break;
      case 3: matvec4_rows<3>(w, xp, y, r0, r1); break;
      case 4: matvec4_rows<4>(w, xp, y, r0, r1); break;
      case 5: matvec4_rows<5>(w, xp, y, r0, r1); break;
      case 6: matvec4_rows<6>(w, xp, y, r0, r1); break;
      case 7: matvec4_rows<7>(w, xp, y, r0, r1); break;
      default: matvec4_rows<8>(w, xp, y, r0, r1); break;
    }
  }
}

// ---------------------------------------------------------------- bf16 activations: int8 dot products
// For bf16 activations (m <= 8, cols % 128 == 0, blocksize >= 64) the fused matvec runs on
// AVX512-VNNI, as llama.cpp's q4 x q8 kernels do: each 64-element chunk of x is quantized to
// int8 with its own scale d = max|x| / 127, and each code becomes the unsigned byte
// round(127 · codebook[code]) + 128 (one in-lane vpshufb for 64 codes). vpdpbusd sums
// u·q over 4 bytes per lane; the +128 offset is removed by starting the accumulator at
// -128 · Σq (per lane, precomputed on the x side); the float result is scaled by
// absmax[block] · d / 127 per lane. The error is that of 8-bit activations and 8-bit codebook
// values (a few 1e-3 relative), the usual precision of quantized decode; float32 activations
// keep the exact float32 kernel above. Per 128 elements: 11 vector ops instead of ~26.
namespace {
struct Q8X {
  std::vector<int8_t> q;     // [m, cols]: per 128-chunk 64 bytes of even elements, 64 of odd ones
  std::vector<int32_t> ncorr;  // [m, cols / 128, 16]: -128 · Σq over the 8 elements of each lane
  std::vector<float> dscale;   // [m, cols / 128, 16]: d / 127 of the lane's 64-element chunk
};

void quantize_x_q8(Q8X& o, const uint16_t* x, int64_t m, int64_t cols) {
  const int64_t nc = cols / 128;
  o.q.resize(size_t(m * cols));
  o.ncorr.resize(size_t(m * nc * 16));
  o.dscale.resize(size_t(m * nc * 16));
  for (int64_t i = 0; i < m; i++)
    for (int64_t c = 0; c < nc; c++) {
      const uint16_t* xc = x + i * cols + c * 128;
      int8_t* qc = o.q.data() + i * cols + c * 128;
      int32_t* corr = o.ncorr.data() + (i * nc + c) * 16;
      float* ds = o.dscale.data() + (i * nc + c) * 16;
      for (int h = 0; h < 2; h++) {
        float amax = 0.0f;
        for (int t = 64 * h; t < 64 * h + 64; t++) amax = std::max(amax, std::fabs(bf16_to_f32(xc[t])));
        if (!(amax > 1e-30f)) amax = 0.0f;  // an all-zero (or denormal) chunk quantizes to 0
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int l = 8 * h; l < 8 * h + 8; l++) {
          ds[l] = amax / 127.0f / 127.0f;
          int32_t sum = 0;
          for (int t = 8 * l; t < 8 * l + 8; t++) {  // lane l covers elements 8l .. 8l+7
            const float v = std::nearbyint(bf16_to_f32(xc[t]) * inv);
            const int8_t qv = int8_t(std::max(-127.0f, std::min(127.0f, v)));
            qc[(t & 1) * 64 + t / 2] = qv;
            sum += qv;
          }
          corr[l] = -128 * sum;
        }
      }
    }
}

template <int M>
void matvec4_q8_rows(const ql_qweight* w, const Q8X& xq, float* y, int64_t r0, int64_t r1) {
  const QWeight& q = qw(w);
  const float* value = codebook(w->quant_type).value;
  alignas(16) uint8_t tab[16];
  for (int k = 0; k < 16; k++) tab[k] = uint8_t(int(std::nearbyint(value[k] * 127.0f)) + 128);
  const __m512i tbl = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(tab)));
  const __m512i m4 = _mm512_set1_epi8(15);
  const int64_t cols = w->cols, rows = w->rows, nc = cols / 128;
  const int lg = __builtin_ctzll(uint64_t(w->blocksize));
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  for (int64_t r = r0; r < r1; r++) {
    __m512 tot[M];
    for (int i = 0; i < M; i++) tot[i] = _mm512_setzero_ps();
    const int64_t flat = r * cols;
    const uint8_t* prow = packed + (flat >> 1);
    for (int64_t c = 0; c < nc; c++) {
      const int64_t j = c * 128;
      _mm_prefetch(reinterpret_cast<const char*>(prow + (j >> 1) + kPrefetchBytes), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(prow + (j >> 1));
      const __m512i wh = _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
      const __m512i wl = _mm512_shuffle_epi8(tbl, _mm512_and_si512(v, m4));
      const __m512 am = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(absmax[(flat + j) >> lg]),
                                             _mm512_set1_ps(absmax[(flat + j + 64) >> lg]));
      for (int i = 0; i < M; i++) {
        const int8_t* xc = xq.q.data() + i * cols + j;
        const int64_t o = (i * nc + c) * 16;
        __m512i acc = _mm512_loadu_si512(xq.ncorr.data() + o);
        acc = _mm512_dpbusd_epi32(acc, wh, _mm512_loadu_si512(xc));
        acc = _mm512_dpbusd_epi32(acc, wl, _mm512_loadu_si512(xc + 64));
        tot[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(am, _mm512_loadu_ps(xq.dscale.data() + o)), tot[i]);
      }
    }
    for (int i = 0; i < M; i++) y[i * rows + r] = hsum16(tot[i]);
  }
}
}  // namespace

void matvec4_q8_avx512(const ql_qweight* w, const uint16_t* x, float* y, int64_t m, int nthreads) {
  Q8X xq;
  quantize_x_q8(xq, x, m, w->cols);
  const int64_t rows = w->rows;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    switch (m) {
      case 1: matvec4_q8_rows<1>(w, xq, y, r0, r1); break;
      case 2: matvec4_q8_rows<2>(w, xq, y, r0, r1); break;
      case 3: matvec4_q8_rows<3>(w, xq, y, r0, r1); break;
      case 4: matvec4_q8_rows<4>(w, xq, y, r0, r1); break;
      case 5: matvec4_q8_rows<5>(w, xq, y, r0, r1); break;
      case 6: matvec4_q8_rows<6>(w, xq, y, r0, r1); break;
      case 7: matvec4_q8_rows<7>(w, xq, y, r0, r1); break;
      default: matvec4_q8_rows<8>(w, xq, y, r0, r1); break;
    }
  }
}

// Dequantizes flat elements [s + e0, s + e1) into out[e0 .. e1) (F32 or BF16). Aligned chunks of
// 32 elements lie inside one block (blocksize >= 32 is a power of two), so they take one LUT.
static void dequant_range(const ql_qweight* w, int64_t s, int64_t e0, int64_t e1, void* out,
                          int32_t dtype) {
  const QWeight& q = qw(w);
  const float* value = codebook(w->quant_type).value;
  const __m512 cb = _mm512_loadu_ps(value);
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  const int64_t bs = w->blocksize;
  const int lg = __builtin_ctzll(uint64_t(bs));
  float* of = static_cast<float*>(out);
  uint16_t* oh = static_cast<uint16_t*>(out);
  auto scalar = [&](int64_t e) {
    const int64_t f = s + e;
    const uint8_t byte = packed[f >> 1];
    const float v = value[(f & 1) ? (byte & 15) : (byte >> 4)] * absmax[f >> lg];
    if (dtype == QL_F32) of[e] = v;
    else oh[e] = f32_to_bf16(v);
  };
  int64_t e = e0;
  for (; e < e1 && ((s + e) & 31) != 0; e++) scalar(e);
  const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i dup_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  const __m512i shifts = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
  int64_t cur_b = -1;
  __m512 lut = cb;
  for (; e + 32 <= e1; e += 32) {
    const int64_t f = s + e;
    const int64_t b = f >> lg;
    if (b != cur_b) {
      lut = _mm512_mul_ps(cb, _mm512_set1_ps(absmax[b]));
      cur_b = b;
    }
    const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + (f >> 1))));
    const __m512 v0 = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_permutexvar_epi32(dup_lo, d), shifts), lut);
    const __m512 v1 = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_permutexvar_epi32(dup_hi, d), shifts), lut);
    if (dtype == QL_F32) {
      _mm512_storeu_ps(of + e, v0);
      _mm512_storeu_ps(of + e + 16, v1);
    } else {
      _mm512_storeu_si512(oh + e, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
    }
  }
  for (; e < e1; e++) scalar(e);
}

void dequant_rows_avx512(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                         int nthreads) {
  const int64_t s = r0 * w->cols, n = (r1 - r0) * w->cols;
  const int64_t chunk = 1 << 14;
  const int64_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++)
    dequant_range(w, s, c * chunk, std::min(n, (c + 1) * chunk), out, dtype);
}


// ---------------------------------------------------------------- small M (2..64 rows): decode once
// Each thread takes groups of kRW = 4 rows of W, decodes a group once into an L1-resident buffer
// (bf16 for bf16 activations, float32 for float32 ones: code · absmax, as dequant_rows_avx512),
// then sweeps every activation row over it in register tiles of kRW W rows × RX (≤ 6) x rows:
// bf16 pairs through vdpbf16ps (32 multiply-adds per instruction, float32 accumulation), float32
// through FMAs. Any cols (a masked tail step); W rows past the matrix decode as zeros.
namespace {
constexpr int kRW = 4;
constexpr int kRX = 6;  // x rows per register tile: kRW × kRX = 24 accumulators

// out[0..3] = horizontal sums of a, b, c, d
inline void hsum4x16(__m512 a, __m512 b, __m512 c, __m512 d, float* out) {
  auto half = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  const __m256 ab = _mm256_hadd_ps(half(a), half(b)), cd = _mm256_hadd_ps(half(c), half(d));
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // [a b c d | a b c d] partial sums per 128-bit half
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
}

template <int RX>
void tile_bf16(const uint16_t* wb, const uint16_t* x, int64_t cols, float* out /* [RX][kRW] */) {
  static_assert(kRW == 4, "hsum4x16 reduces four W rows");
  __m512 acc[kRW][RX];
  for (int w = 0; w < kRW; w++)
    for (int i = 0; i < RX; i++) acc[w][i] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32) {
    __m512bh wv[kRW];
    for (int w = 0; w < kRW; w++) wv[w] = (__m512bh)_mm512_loadu_si512(wb + w * cols + j);
    for (int i = 0; i < RX; i++) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * cols + j);
      for (int w = 0; w < kRW; w++) acc[w][i] = _mm512_dpbf16_ps(acc[w][i], wv[w], xv);
    }
  }
  if (j < cols) {
    const __mmask32 k = (__mmask32)((1ull << (cols - j)) - 1);
    __m512bh wv[kRW];
    for (int w = 0; w < kRW; w++) wv[w] = (__m512bh)_mm512_maskz_loadu_epi16(k, wb + w * cols + j);
    for (int i = 0; i < RX; i++) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(k, x + i * cols + j);
      for (int w = 0; w < kRW; w++) acc[w][i] = _mm512_dpbf16_ps(acc[w][i], wv[w], xv);
    }
  }
  for (int i = 0; i < RX; i++) hsum4x16(acc[0][i], acc[1][i], acc[2][i], acc[3][i], out + i * kRW);
}

template <int RX>
void tile_f32(const float* wb, const float* x, int64_t cols, float* out /* [RX][kRW] */) {
  __m512 acc[kRW][RX];
  for (int w = 0; w < kRW; w++)
    for (int i = 0; i < RX; i++) acc[w][i] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16) {
    __m512 wv[kRW];
    for (int w = 0; w < kRW; w++) wv[w] = _mm512_loadu_ps(wb + w * cols + j);
    for (int i = 0; i < RX; i++) {
      const __m512 xv = _mm512_loadu_ps(x + i * cols + j);
      for (int w = 0; w < kRW; w++) acc[w][i] = _mm512_fmadd_ps(wv[w], xv, acc[w][i]);
    }
  }
  if (j < cols) {
    const __mmask16 k = (__mmask16)((1u << (cols - j)) - 1);
    __m512 wv[kRW];
    for (int w = 0; w < kRW; w++) wv[w] = _mm512_maskz_loadu_ps(k, wb + w * cols + j);
    for (int i = 0; i < RX; i++) {
      const __m512 xv = _mm512_maskz_loadu_ps(k, x + i * cols + j);
      for (int w = 0; w < kRW; w++) acc[w][i] = _mm512_fmadd_ps(wv[w], xv, acc[w][i]);
    }
  }
  for (int i = 0; i < RX; i++) hsum4x16(acc[0][i], acc[1][i], acc[2][i], acc[3][i], out + i * kRW);
}

template <class T>
void tile_any(const T* wb, const T* x, int64_t cols, int rx, float* out) {
  static_assert(kRX == 6, "one case per tile height");
  if constexpr (sizeof(T) == 2) {
    switch (rx) {
      case 1: tile_bf16<1>(wb, x, cols, out); break;
      case 2: tile_bf16<2>(wb, x, cols, out); break;
      case 3: tile_bf16<3>(wb, x, cols, out); break;
      case 4: tile_bf16<4>(wb, x, cols, out); break;
      case 5: tile_bf16<5>(wb, x, cols, out); break;
      default: tile_bf16<6>(wb, x, cols, out); break;
    }
  } else {
    switch (rx) {
      case 1: tile_f32<1>(wb, x, cols, out); break;
      case 2: tile_f32<2>(wb, x, cols, out); break;
      case 3: tile_f32<3>(wb, x, cols, out); break;
      case 4: tile_f32<4>(wb, x, cols, out); break;
      case 5: tile_f32<5>(wb, x, cols, out); break;
      default: tile_f32<6>(wb, x, cols, out); break;
    }
  }
}
}  // namespace

void matmul4_smallm_avx512(const ql_qweight* w, const void* x, int32_t dtype, float* y, int64_t m,
                           int nthreads) {
  const int64_t rows = w->rows, cols = w->cols;
  const int64_t groups = (rows + kRW - 1) / kRW;
  const size_t esize = dtype == QL_BF16 ? 2 : 4;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t g0 = groups * t / nt, g1 = groups * (t + 1) / nt;
    static thread_local std::vector<uint8_t> buf;
    if (buf.size() < size_t(kRW * cols) * esize) buf.resize(size_t(kRW * cols) * esize);
    float out[kRX * kRW];
    for (int64_t g = g0; g < g1; g++) {
      const int64_t r0 = g * kRW, nw = std::min<int64_t>(kRW, rows - r0);
      dequant_range(w, r0 * cols, 0, nw * cols, buf.data(), dtype == QL_BF16 ? QL_BF16 : QL_F32);
      if (nw < kRW) memset(buf.data() + size_t(nw * cols) * esize, 0, size_t((kRW - nw) * cols) * esize);
      for (int64_t i0 = 0; i0 < m; i0 += kRX) {
        const int rx = int(std::min<int64_t>(kRX, m - i0));
        if (dtype == QL_BF16)
          tile_any(reinterpret_cast<const uint16_t*>(buf.data()), static_cast<const uint16_t*>(x) + i0 * cols, cols, rx, out);
        else
          tile_any(reinterpret_cast<const float*>(buf.data()), static_cast<const float*>(x) + i0 * cols, cols, rx, out);
        for (int i = 0; i < rx; i++)
          for (int64_t ww = 0; ww < nw; ww++) y[(i0 + i) * rows + r0 + ww] = out[i * kRW + ww];
      }
    }
  }
}

}  // namespace ql::cpu
