// quant.cpp — blockwise 4-bit quantization with double quantization (bitsandbytes semantics,
// rules in common/quant_math.h) and the CPU storage of frozen 4-bit weights.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/half.h"
#include "common/quant_math.h"
#include "cpu/cpu.h"
#include "cpu/linalg.h"

namespace ql::cpu {

// packed [ceil(n/2)], absmax [nb]  <-  x [n] of x_dtype (F32, BF16 or F16). A 16-bit source is
// widened one block at a time into a buffer on the stack (exact: every bf16/f16 value is an
// f32), so quantizing a 16-bit checkpoint needs no f32 copy of the tensor (a 7B model's largest
// weight would be 180 MB of f32, allocated and page-faulted per tensor) and gives the same codes.
void quantize_4bit(uint8_t* packed, float* absmax, const void* x_any, int32_t x_dtype, uint64_t n,
                   int blocksize, int quant_type, int nthreads, bool avx512) {
  const Codebook& cb = codebook(quant_type);
  const int64_t nb = int64_t((n + blocksize - 1) / blocksize);
  const uint8_t zero_code = quantize_4bit_value(cb.midpoint, cb.sorted_code, 0.0f);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nb > 64)
  for (int64_t b = 0; b < nb; b++) {
    const uint64_t block_start = uint64_t(b) * blocksize;
    const uint64_t block_end = std::min<uint64_t>(block_start + blocksize, n);
    if (avx512 && block_end - block_start == uint64_t(blocksize)) {
      absmax[b] = quantize_block_avx512(packed, x_any, x_dtype, block_start, blocksize, cb);
      continue;
    }
    // x[i] for i in [start, end) is the block's element i - block_start
    alignas(64) float widened[kMaxBlocksize];
    const float* x;
    if (x_dtype == QL_F32) {
      x = static_cast<const float*>(x_any);
    } else {
      const uint16_t* h = static_cast<const uint16_t*>(x_any) + block_start;
      const uint64_t len = block_end - block_start;
      if (x_dtype == QL_BF16) {
        for (uint64_t i = 0; i < len; i++) widened[i] = bf16_to_f32(h[i]);  // a shift: vectorized
      } else {
        for (uint64_t i = 0; i < len; i++) widened[i] = f16_to_f32(h[i]);
      }
      x = widened - block_start;
    }
    const uint64_t start = block_start, end = block_end;
    float amax = 0.0f;
    for (uint64_t i = start; i < end; i++) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    const bool full = end - start == uint64_t(blocksize);
    // Full blocks, 8 elements at a time: code rank = number of midpoints strictly below the
    // scaled value, counted with 15 vector compares (the same comparisons as the scalar binary
    // search, so the same codes, bit for bit). Partial blocks and NaN handling as in the scalar
    // path: the clamp is written with compares so a NaN stays NaN and ranks 0.
    uint64_t i0 = start;
    if (full) {
      const float a = amax > 1e-38f ? amax : 1e-38f;
      const __m256 inv = _mm256_set1_ps(1.0f / a);
      const __m256 one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
      alignas(32) int32_t rank[8];
      for (; i0 + 8 <= end; i0 += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i0), inv);
        v = _mm256_blendv_ps(v, minus_one, _mm256_cmp_ps(v, minus_one, _CMP_LT_OQ));
        v = _mm256_blendv_ps(v, one, _mm256_cmp_ps(v, one, _CMP_GT_OQ));
        __m256i count = _mm256_setzero_si256();
        for (int m = 0; m < 15; m++) {
          const __m256 below = _mm256_cmp_ps(_mm256_set1_ps(cb.midpoint[m]), v, _CMP_LT_OQ);
          count = _mm256_sub_epi32(count, _mm256_castps_si256(below));  // true lanes are -1
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(rank), count);
        for (int e = 0; e < 8; e += 2)
          packed[(i0 + e) / 2] = uint8_t(cb.sorted_code[rank[e]] << 4 | cb.sorted_code[rank[e + 1]]);
      }
    }
    // blocksize is even, so a block's bytes are its own (only the very last byte may be half).
    for (uint64_t i = i0; i < end; i += 2) {
      uint8_t hi = quantize_4bit_value(cb.midpoint, cb.sorted_code, scale_into_unit(x[i], amax, full));
      uint8_t lo = i + 1 < end
                       ? quantize_4bit_value(cb.midpoint, cb.sorted_code, scale_into_unit(x[i + 1], amax, full))
                       : zero_code;
      packed[i / 2] = uint8_t(hi << 4 | lo);
    }
  }
}

// out [n]  <-  packed, absmax
void dequantize_4bit(float* out, const uint8_t* packed, const float* absmax, uint64_t n,
                     int blocksize, int quant_type, int nthreads) {
  const float* value = codebook(quant_type).value;
  const int64_t nb = int64_t((n + blocksize - 1) / blocksize);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nb > 64)
  for (int64_t b = 0; b < nb; b++) {
    const uint64_t start = uint64_t(b) * blocksize;
    const uint64_t end = std::min<uint64_t>(start + blocksize, n);
    const float a = absmax[b];
    uint64_t i = start;
    for (; i + 1 < end; i += 2) {
      const uint8_t byte = packed[i / 2];
      out[i] = value[byte >> 4] * a;
      out[i + 1] = value[byte & 15] * a;
    }
    if (i < end) out[i] = value[packed[i / 2] >> 4] * a;
  }
}

// float32 sum in numpy's pairwise order (8 accumulators per leaf of <= 128, halves split on a
// multiple of 8): the order the reference mean of the absmax values was computed in.
static float pairwise_sum_f32(const float* a, uint64_t n) {
  if (n < 8) {
    float res = 0.0f;
    for (uint64_t i = 0; i < n; i++) res += a[i];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (int j = 0; j < 8; j++) r[j] = a[j];
    uint64_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; j++) r[j] += a[i + j];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  uint64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum_f32(a, n2) + pairwise_sum_f32(a + n2, n - n2);
}

// qabsmax [nb], absmax2 [ceil(nb/nbs)], offset [1]  <-  absmax [nb]
void quantize_absmax_8bit(uint8_t* qabsmax, float* absmax2, float* offset, const float* absmax,
                          uint64_t nb, int nested_blocksize) {
  const DynamicMap& dyn = dynamic_map();
  const float off = pairwise_sum_f32(absmax, nb) / float(nb);
  *offset = off;
  const uint64_t nb2 = (nb + nested_blocksize - 1) / nested_blocksize;
  for (uint64_t c = 0; c < nb2; c++) {
    const uint64_t start = c * nested_blocksize;
    const uint64_t end = std::min<uint64_t>(start + nested_blocksize, nb);
    float amax = 0.0f;
    for (uint64_t i = start; i < end; i++) amax = std::max(amax, std::fabs(absmax[i] - off));
    absmax2[c] = amax;
    const bool full = end - start == uint64_t(nested_blocksize);
    for (uint64_t i = start; i < end; i++)
      qabsmax[i] = quantize_8bit_value(dyn.midpoint, scale_into_unit(absmax[i] - off, amax, full));
  }
}

void dequantize_absmax_8bit(float* absmax, const uint8_t* qabsmax, const float* absmax2,
                            float offset, uint64_t nb, int nested_blocksize) {
  const float* dyn = dynamic_map().value;
  for (uint64_t b = 0; b < nb; b++)
    absmax[b] = dequant_absmax(dyn, qabsmax[b], absmax2[b / nested_blocksize], offset);
}

ql_status quantize_4bit(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x,
                              uint64_t n, int32_t blocksize, int32_t quant_type) {
  quantize_4bit(packed, absmax, x, QL_F32, n, blocksize, quant_type, threads(ctx), state(ctx).avx512);
  return QL_OK;
}

ql_status dequantize_4bit(ql_ctx* ctx, float* out, const uint8_t* packed,
                                const float* absmax, uint64_t n, int32_t blocksize,
                                int32_t quant_type) {
  dequantize_4bit(out, packed, absmax, n, blocksize, quant_type, threads(ctx));
  return QL_OK;
}

ql_status quantize_absmax_8bit(ql_ctx*, uint8_t* qabsmax, float* absmax2, float* offset,
                                     const float* absmax, uint64_t nb, int32_t nested_blocksize) {
  quantize_absmax_8bit(qabsmax, absmax2, offset, absmax, nb, nested_blocksize);
  return QL_OK;
}

ql_status dequantize_absmax_8bit(ql_ctx*, float* absmax, const uint8_t* qabsmax,
                                       const float* absmax2, const float* offset, uint64_t nb,
                                       int32_t nested_blocksize) {
  dequantize_absmax_8bit(absmax, qabsmax, absmax2, *offset, nb, nested_blocksize);
  return QL_OK;
}

// ---------------------------------------------------------------- frozen 4-bit weights

ql_status qweight_quantize(ql_ctx* ctx, ql_qweight* w, const void* host_w, int32_t w_dtype) {
  auto* q = new QWeight();
  const uint64_t n = w->n(), nb = w->nblocks();
  q->packed.resize((n + 1) / 2);
  q->absmax.resize(nb);
  quantize_4bit(q->packed.data(), q->absmax.data(), host_w, w_dtype, n, w->blocksize, w->quant_type,
                threads(ctx), state(ctx).avx512);
  if (w->double_quant) {
    q->qabsmax.resize(nb);
    q->absmax2.resize(w->nblocks2());
    quantize_absmax_8bit(q->qabsmax.data(), q->absmax2.data(), &q->offset, q->absmax.data(), nb,
                         w->nested_blocksize);
    // compute with what is stored: the 8-bit absmax, dequantized
    dequantize_absmax_8bit(q->absmax.data(), q->qabsmax.data(), q->absmax2.data(), q->offset, nb,
                           w->nested_blocksize);
  }
  w->impl = q;
  return QL_OK;
}

ql_status qweight_import(ql_ctx*, ql_qweight* w, const uint8_t* host_packed,
                         const float* host_absmax, const uint8_t* host_qabsmax,
                         const float* host_absmax2, float offset) {
  auto* q = new QWeight();
  const uint64_t n = w->n(), nb = w->nblocks();
  q->packed.assign(host_packed, host_packed + (n + 1) / 2);
  q->absmax.assign(host_absmax, host_absmax + nb);
  if (w->double_quant) {
    q->qabsmax.assign(host_qabsmax, host_qabsmax + nb);
    q->absmax2.assign(host_absmax2, host_absmax2 + w->nblocks2());
    q->offset = offset;
  }
  w->impl = q;
  return QL_OK;
}

ql_status qweight_export(ql_ctx*, const ql_qweight* w, uint8_t* host_packed, float* host_absmax,
                         uint8_t* host_qabsmax, float* host_absmax2, float* host_offset) {
  const QWeight& q = qw(w);
  if (host_packed) memcpy(host_packed, q.packed.data(), q.packed.size());
  if (host_absmax) memcpy(host_absmax, q.absmax.data(), q.absmax.size() * 4);
  if (host_qabsmax) memcpy(host_qabsmax, q.qabsmax.data(), q.qabsmax.size());
  if (host_absmax2) memcpy(host_absmax2, q.absmax2.data(), q.absmax2.size() * 4);
  if (host_offset) *host_offset = q.offset;
  return QL_OK;
}

ql_status qweight_bytes(const ql_qweight* w, int64_t* out2) {
  const uint64_t n = w->n(), nb = w->nblocks();
  out2[0] = int64_t((n + 1) / 2);
  out2[1] = w->double_quant ? int64_t(nb + 4 * w->nblocks2() + 4) : int64_t(4 * nb);
  return QL_OK;
}

ql_status qweight_dequantize(ql_ctx* ctx, void* out, const ql_qweight* w, int32_t dtype) {
  const QWeight& q = qw(w);
  if (dtype == QL_F32) {
    dequantize_4bit(static_cast<float*>(out), q.packed.data(), q.absmax.data(), w->n(),
                    w->blocksize, w->quant_type, threads(ctx));
    return QL_OK;
  }
  const float* value = codebook(w->quant_type).value;
  uint16_t* o = static_cast<uint16_t*>(out);
  const int64_t n = int64_t(w->n());
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    const uint8_t byte = q.packed[i / 2];
    const uint8_t code = (i & 1) ? (byte & 15) : (byte >> 4);
    o[i] = f32_to_bf16(value[code] * q.absmax[i / w->blocksize]);
  }
  return QL_OK;
}

void qweight_free(ql_qweight* w) { delete static_cast<QWeight*>(w->impl); }

}  // namespace ql::cpu
