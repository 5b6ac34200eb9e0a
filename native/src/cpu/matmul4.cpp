// matmul4.cpp — 4-bit matmul Y = X·Wᵀ and its backward dX = dY·W on the CPU.
//
// Storage: QWeight keeps bitsandbytes' layout (packed nibbles, high nibble first; float absmax
// per block, already dequantized for double quant), so export is a copy and no second copy of
// the codes exists. Blocks run over the row-major flattening: every path finds the block of
// flat element f as f >> log2(blocksize).
// Small M (2..kSmallMaxRows rows, decode batches): each group of 4 W rows is decoded once into a
// per-thread buffer and every activation row is swept over it in register tiles (bf16 pairs via
// vdpbf16ps or float32 FMAs on AVX-512, float32 FMAs on AVX2), so W is read and decoded once per
// call whatever the row count.
// One row (and m <= kFusedMaxRows for callers of the kernels below), fused, never materializing W:
//   - bf16 activations on AVX-512 (cols % 128 == 0, blocksize >= 64): int8 dot products
//     (VNNI), see matmul4_avx512.cpp;
//   - otherwise (cols % 32 == 0): float32 FMAs on codes looked up in the codebook pre-scaled by
//     the block's absmax (16 floats: vpermps on AVX-512, two vpermps + blend on AVX2). X is
//     pre-arranged per 32-element chunk as [16 even elements | 16 odd elements] (AVX-512) or per
//     16-element chunk as [8 even | 8 odd] (AVX2), so the high nibbles (even elements) and the
//     low nibbles (odd elements) of consecutive bytes multiply contiguous vectors of X.
// Many rows (and shapes the fused kernels do not take): W is dequantized tile by tile (about
// 16 MiB; bf16 for bf16 activations on AVX-512 machines, float32 otherwise) and multiplied with
// oneDNN (bf16 matmul primitive / sgemm). The backward always takes this path.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "common/quant_math.h"
#include "cpu/linalg.h"

namespace ql::cpu {

constexpr int64_t kFusedMaxRows = 8;
// 2..kSmallMaxRows rows: the small-M kernel (each W row group decoded once for all rows).
constexpr int64_t kSmallMaxRows = 64;

// ---------------------------------------------------------------- dequantize rows (portable)

void dequant_rows(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                  int nthreads) {
  const QWeight& q = qw(w);
  const float* value = codebook(w->quant_type).value;
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  const int lg = __builtin_ctzll(uint64_t(w->blocksize));
  const int64_t s = r0 * w->cols, n = (r1 - r0) * w->cols;
  float* of = static_cast<float*>(out);
  uint16_t* oh = static_cast<uint16_t*>(out);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t c = 0; c < (n + 1023) / 1024; c++) {
    const int64_t e0 = c * 1024, e1 = std::min(n, e0 + 1024);
    for (int64_t e = e0; e < e1; e++) {
      const int64_t f = s + e;
      const uint8_t byte = packed[f >> 1];
      const float v = value[(f & 1) ? (byte & 15) : (byte >> 4)] * absmax[f >> lg];
      if (dtype == QL_F32) of[e] = v;
      else oh[e] = f32_to_bf16(v);
    }
  }
}

// ---------------------------------------------------------------- fused matvec, AVX2

// Codebook lookup of 16 entries (lo8 = entries 0..7, hi8 = 8..15) by the low 4 bits of idx.
static inline __m256 lookup16(__m256 lo8, __m256 hi8, __m256i idx) {
  const __m256 a = _mm256_permutevar8x32_ps(lo8, idx);
  const __m256 b = _mm256_permutevar8x32_ps(hi8, idx);
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

template <int M>
static void matvec4_avx2_rows(const ql_qweight* w, const float* xp, float* y, int64_t r0,
                              int64_t r1) {
  const QWeight& q = qw(w);
  const float* value = codebook(w->quant_type).value;
  const __m256 cb_lo = _mm256_loadu_ps(value), cb_hi = _mm256_loadu_ps(value + 8);
  const int64_t cols = w->cols, rows = w->rows, bs = w->blocksize;
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  const int lg = __builtin_ctzll(uint64_t(bs));
  for (int64_t r = r0; r < r1; r++) {
    __m256 ae[M], ao[M];
    for (int i = 0; i < M; i++) ae[i] = ao[i] = _mm256_setzero_ps();
    const int64_t flat = r * cols;
    int64_t cur_b = -1;
    __m256 lo8 = cb_lo, hi8 = cb_hi;
    for (int64_t j = 0; j < cols; j += 16) {  // 16-chunks never straddle a block
      const int64_t b = (flat + j) >> lg;
      if (b != cur_b) {
        const __m256 am = _mm256_set1_ps(absmax[b]);
        lo8 = _mm256_mul_ps(cb_lo, am);
        hi8 = _mm256_mul_ps(cb_hi, am);
        cur_b = b;
      }
      const __m256i d = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + ((flat + j) >> 1))));
      const __m256 we = lookup16(lo8, hi8, _mm256_srli_epi32(d, 4));
      const __m256 wo = lookup16(lo8, hi8, d);
      for (int i = 0; i < M; i++) {
        ae[i] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xp + i * cols + j), ae[i]);
        ao[i] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xp + i * cols + j + 8), ao[i]);
      }
    }
    for (int i = 0; i < M; i++) {
      __m256 s = _mm256_add_ps(ae[i], ao[i]);
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      h = _mm_add_ss(h, _mm_movehdup_ps(h));
      y[i * rows + r] = _mm_cvtss_f32(h);
    }
  }
}

void matvec4_avx2(const ql_qweight* w, const float* xp, float* y, int64_t m, int nthreads) {
  const int64_t rows = w->rows;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    switch (m) {
      case 1: matvec4_avx2_rows<1>(w, xp, y, r0, r1); break;
      case 2: matvec4_avx2_rows<2>(w, xp, y, r0, r1); break;
      case 3: matvec4_avx2_rows<3>(w, xp, y, r0, r1); break;
      case 4: matvec4_avx2_rows<4>(w, xp, y, r0, r1); break;
      case 5: matvec4_avx2_rows<5>(w, xp, y, r0, r1); break;
      case 6: matvec4_avx2_rows<6>(w, xp, y, r0, r1); break;
      case 7: matvec4_avx2_rows<7>(w, xp, y, r0, r1); break;
      default: matvec4_avx2_rows<8>(w, xp, y, r0, r1); break;
    }
  }
}

// ---------------------------------------------------------------- small M (2..64 rows), AVX2
// As matmul4_smallm_avx512: groups of kRW2 = 4 W rows decoded once (float32, vector lookups) into
// a per-thread buffer, every activation row (float32) swept over it in tiles of 4 W rows × 2 x rows.
constexpr int kRW2 = 4;

// out[e] = W's flat elements [s + e0, s + e1) as float32 (e relative to s).
static void dequant_range_avx2(const ql_qweight* w, int64_t s, int64_t e0, int64_t e1, float* out) {
  const QWeight& q = qw(w);
  const float* value = codebook(w->quant_type).value;
  const __m256 cb_lo = _mm256_loadu_ps(value), cb_hi = _mm256_loadu_ps(value + 8);
  const uint8_t* packed = q.packed.data();
  const float* absmax = q.absmax.data();
  const int lg = __builtin_ctzll(uint64_t(w->blocksize));
  auto scalar = [&](int64_t e) {
    const int64_t f = s + e;
    const uint8_t byte = packed[f >> 1];
    out[e] = value[(f & 1) ? (byte & 15) : (byte >> 4)] * absmax[f >> lg];
  };
  int64_t e = e0;
  for (; e < e1 && ((s + e) & 15) != 0; e++) scalar(e);
  int64_t cur_b = -1;
  __m256 lo8 = cb_lo, hi8 = cb_hi;
  for (; e + 16 <= e1; e += 16) {  // 16 aligned elements lie in one block (blocksize >= 32)
    const int64_t f = s + e, b = f >> lg;
    if (b != cur_b) {
      const __m256 am = _mm256_set1_ps(absmax[b]);
      lo8 = _mm256_mul_ps(cb_lo, am);
      hi8 = _mm256_mul_ps(cb_hi, am);
      cur_b = b;
    }
    const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + (f >> 1))));
    const __m256 we = lookup16(lo8, hi8, _mm256_srli_epi32(d, 4));  // elements 0, 2, .., 14
    const __m256 wo = lookup16(lo8, hi8, d);                        // elements 1, 3, .., 15
    const __m256 a = _mm256_unpacklo_ps(we, wo), c = _mm256_unpackhi_ps(we, wo);
    _mm256_storeu_ps(out + e, _mm256_permute2f128_ps(a, c, 0x20));
    _mm256_storeu_ps(out + e + 8, _mm256_permute2f128_ps(a, c, 0x31));
  }
  for (; e < e1; e++) scalar(e);
}

static inline float hsum8_avx2(__m256 s) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

template <int RX>
static void tile_f32_avx2(const float* wb, const float* x, int64_t cols, float* out /* [RX][kRW2] */) {
  __m256 acc[kRW2][RX];
  for (int w = 0; w < kRW2; w++)
    for (int i = 0; i < RX; i++) acc[w][i] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    __m256 wv[kRW2];
    for (int w = 0; w < kRW2; w++) wv[w] = _mm256_loadu_ps(wb + w * cols + j);
    for (int i = 0; i < RX; i++) {
      const __m256 xv = _mm256_loadu_ps(x + i * cols + j);
      for (int w = 0; w < kRW2; w++) acc[w][i] = _mm256_fmadd_ps(wv[w], xv, acc[w][i]);
    }
  }
  for (int i = 0; i < RX; i++)
    for (int w = 0; w < kRW2; w++) {
      float v = hsum8_avx2(acc[w][i]);
      for (int64_t jj = j; jj < cols; jj++) v += wb[w * cols + jj] * x[i * cols + jj];
      out[i * kRW2 + w] = v;
    }
}

void matmul4_smallm_avx2(const ql_qweight* w, const float* x, float* y, int64_t m, int nthreads) {
  const int64_t rows = w->rows, cols = w->cols;
  const int64_t groups = (rows + kRW2 - 1) / kRW2;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t g0 = groups * t / nt, g1 = groups * (t + 1) / nt;
    static thread_local std::vector<float> buf;
    if (buf.size() < size_t(kRW2 * cols)) buf.resize(size_t(kRW2 * cols));
    float out[2 * kRW2];
    for (int64_t g = g0; g < g1; g++) {
      const int64_t r0 = g * kRW2, nw = std::min<int64_t>(kRW2, rows - r0);
      dequant_range_avx2(w, r0 * cols, 0, nw * cols, buf.data());
      if (nw < kRW2) std::fill(buf.begin() + nw * cols, buf.begin() + kRW2 * cols, 0.0f);
      for (int64_t i0 = 0; i0 < m; i0 += 2) {
        const int rx = int(std::min<int64_t>(2, m - i0));
        if (rx == 2) tile_f32_avx2<2>(buf.data(), x + i0 * cols, cols, out);
        else tile_f32_avx2<1>(buf.data(), x + i0 * cols, cols, out);
        for (int i = 0; i < rx; i++)
          for (int64_t ww = 0; ww < nw; ww++) y[(i0 + i) * rows + r0 + ww] = out[i * kRW2 + ww];
      }
    }
  }
}

// ---------------------------------------------------------------- entries

// xp [m, cols] = x rearranged per chunk of g elements as [g/2 even | g/2 odd], float32.
static void arrange_x(float* xp, const void* x, int32_t dtype, int64_t m, int64_t cols, int g) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t c = 0; c < cols; c += g)
      for (int k = 0; k < g / 2; k++) {
        xp[i * cols + c + k] = load_as_f32(x, dtype, i * cols + c + 2 * k);
        xp[i * cols + c + g / 2 + k] = load_as_f32(x, dtype, i * cols + c + 2 * k + 1);
      }
}

static std::vector<float> to_f32(const void* p, int32_t dtype, int64_t n, int nthreads) {
  std::vector<float> out(static_cast<size_t>(n));
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = load_as_f32(p, dtype, i);
  return out;
}

// y [n] (dtype) = src [n] (+ y when accumulate)
static void store_out(void* y, int32_t dtype, const float* src, int64_t n, bool accumulate,
                      int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float v = src[i];
    if (accumulate) v = load_as_f32(y, dtype, i) + v;
    store_from_f32(y, dtype, i, v);
  }
}

// Rows of W per dequantized tile: about 16 MiB of tile (few GEMM calls: each one re-packs X),
// a multiple of 16 rows. QLORA_MATMUL_TILE_BYTES overrides the size (tests use it to cover
// several tiles with small weights).
static int64_t tile_rows(const ql_qweight* w, int esize) {
  int64_t bytes = int64_t(16) << 20;
  if (const char* env = getenv("QLORA_MATMUL_TILE_BYTES")) {
    const long long v = atoll(env);
    if (v > 0) bytes = v;
  }
  int64_t nr = bytes / (w->cols * esize);
  nr = std::max<int64_t>(16, nr / 16 * 16);
  return std::min(nr, w->rows);
}

static void* tile_buffer(std::vector<uint8_t>& buf, size_t bytes) {
  buf.resize(bytes + 64);
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
}

ql_status matmul_4bit(ql_ctx* ctx, void* y, const void* x, const ql_qweight* w, int64_t m,
                      int32_t dtype, int32_t accumulate) {
  const int nth = threads(ctx);
  const bool avx512 = state(ctx).avx512;
  const int64_t rows = w->rows, cols = w->cols;
  if (m >= 2 && m <= kSmallMaxRows) {
    std::vector<float> yf, xf;
    float* yo = static_cast<float*>(y);
    if (dtype != QL_F32 || accumulate) {
      yf.resize(size_t(m * rows));
      yo = yf.data();
    }
    if (avx512) {
      matmul4_smallm_avx512(w, x, dtype, yo, m, nth);
    } else {
      const float* xp = static_cast<const float*>(x);
      if (dtype != QL_F32) xp = (xf = to_f32(x, dtype, m * cols, nth)).data();
      matmul4_smallm_avx2(w, xp, yo, m, nth);
    }
    if (yo != y) store_out(y, dtype, yo, m * rows, accumulate, nth);
    return QL_OK;
  }
  if (m <= kFusedMaxRows && avx512 && dtype == QL_BF16 && cols % 128 == 0 && w->blocksize >= 64) {
    std::vector<float> yf(size_t(m * rows));
    matvec4_q8_avx512(w, static_cast<const uint16_t*>(x), yf.data(), m, nth);
    store_out(y, dtype, yf.data(), m * rows, accumulate, nth);
    return QL_OK;
  }
  if (m <= kFusedMaxRows && cols % 32 == 0) {
    std::vector<float> xp(size_t(m * cols)), yf;
    arrange_x(xp.data(), x, dtype, m, cols, avx512 ? 32 : 16);
    float* yo = static_cast<float*>(y);
    if (dtype != QL_F32 || accumulate) {
      yf.resize(size_t(m * rows));
      yo = yf.data();
    }
    if (avx512) matvec4_avx512(w, xp.data(), yo, m, nth);
    else matvec4_avx2(w, xp.data(), yo, m, nth);
    if (yo != y) store_out(y, dtype, yo, m * rows, accumulate, nth);
    return QL_OK;
  }
  const bool bf = dtype == QL_BF16 && avx512;
  const int64_t nr = tile_rows(w, bf ? 2 : 4);
  std::vector<uint8_t> tbuf;
  void* tile = tile_buffer(tbuf, size_t(nr * cols) * (bf ? 2 : 4));
  if (bf) {
    for (int64_t r0 = 0; r0 < rows; r0 += nr) {
      const int64_t r1 = std::min(rows, r0 + nr);
      dequant_rows_avx512(w, r0, r1, tile, QL_BF16, nth);
      bgemm(nth, false, true, m, r1 - r0, cols, 1.0f, static_cast<const uint16_t*>(x), cols,
            static_cast<const uint16_t*>(tile), cols, accumulate ? 1.0f : 0.0f,
            static_cast<uint16_t*>(y) + r0, QL_BF16, rows);
    }
    return QL_OK;
  }
  std::vector<float> xf, yf;
  const float* xp = static_cast<const float*>(x);
  if (dtype != QL_F32) xp = (xf = to_f32(x, dtype, m * cols, nth)).data();
  float* yo = static_cast<float*>(y);
  if (dtype != QL_F32) {
    yf.resize(size_t(m * rows));
    yo = yf.data();
  }
  const float beta = (accumulate && dtype == QL_F32) ? 1.0f : 0.0f;
  for (int64_t r0 = 0; r0 < rows; r0 += nr) {
    const int64_t r1 = std::min(rows, r0 + nr);
    if (avx512) dequant_rows_avx512(w, r0, r1, tile, QL_F32, nth);
    else dequant_rows(w, r0, r1, tile, QL_F32, nth);
    sgemm(nth, false, true, m, r1 - r0, cols, 1.0f, xp, cols, static_cast<const float*>(tile),
          cols, beta, yo + r0, rows);
  }
  if (yo != y) store_out(y, dtype, yo, m * rows, accumulate, nth);
  return QL_OK;
}

ql_status matmul_4bit_backward(ql_ctx* ctx, void* dx, const void* dy, const ql_qweight* w,
                               int64_t m, int32_t dtype, int32_t accumulate) {
  const int nth = threads(ctx);
  const bool avx512 = state(ctx).avx512;
  const int64_t rows = w->rows, cols = w->cols;
  const bool bf = dtype == QL_BF16 && avx512;
  const int64_t nr = tile_rows(w, bf ? 2 : 4);
  std::vector<uint8_t> tbuf;
  void* tile = tile_buffer(tbuf, size_t(nr * cols) * (bf ? 2 : 4));
  // Accumulate over row tiles in float32: straight into dx for F32, into a scratch otherwise.
  std::vector<float> acc, dyf;
  float* out = static_cast<float*>(dx);
  if (dtype != QL_F32) {
    acc.resize(size_t(m * cols));
    out = acc.data();
  }
  const float* dyp = static_cast<const float*>(dy);
  if (dtype != QL_F32 && !bf) dyp = (dyf = to_f32(dy, dtype, m * rows, nth)).data();
  for (int64_t r0 = 0; r0 < rows; r0 += nr) {
    const int64_t r1 = std::min(rows, r0 + nr);
    const float beta = r0 > 0 || (accumulate && dtype == QL_F32) ? 1.0f : 0.0f;
    if (bf) {
      dequant_rows_avx512(w, r0, r1, tile, QL_BF16, nth);
      bgemm(nth, false, false, m, cols, r1 - r0, 1.0f, static_cast<const uint16_t*>(dy) + r0,
            rows, static_cast<const uint16_t*>(tile), cols, beta, out, QL_F32, cols);
    } else {
      if (avx512) dequant_rows_avx512(w, r0, r1, tile, QL_F32, nth);
      else dequant_rows(w, r0, r1, tile, QL_F32, nth);
      sgemm(nth, false, false, m, cols, r1 - r0, 1.0f, dyp + r0, rows,
            static_cast<const float*>(tile), cols, beta, out, cols);
    }
  }
  if (out != dx) store_out(dx, dtype, out, m * cols, accumulate, nth);
  return QL_OK;
}

}  // namespace ql::cpu
