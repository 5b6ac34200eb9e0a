// loss.cpp — fused softmax cross-entropy, and the f32 reductions used for gradient clipping.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

ql_status cross_entropy(ql_ctx* ctx, float* losses, void* dlogits, const void* logits,
                        const int32_t* targets, const float* weights, float grad_scale, int64_t T,
                        int64_t V, int32_t dtype) {
  for (int64_t t = 0; t < T; t++)
    if (targets[t] >= V)
      return ql_fail(QL_E_INVALID, "ql_cross_entropy: targets[%lld] = %d is >= V = %lld",
                     (long long)t, targets[t], (long long)V);
#pragma omp parallel num_threads(threads(ctx)) if (T * V > 16384)
  {
    std::vector<float> row(static_cast<size_t>(V));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < T; t++) {
      const int32_t tgt = targets[t];
      const float w = weights ? weights[t] : 1.0f;
      if (tgt < 0) {
        losses[t] = 0.0f;
        if (dlogits) {
          std::fill(row.begin(), row.end(), 0.0f);
          store_row(dlogits, dtype, t * V, row.data(), V);
        }
        continue;
      }
      load_row(row.data(), logits, dtype, t * V, V);
      float* x = row.data();
      __m256 vm = _mm256_set1_ps(-__builtin_inff());
      int64_t i = 0;
      for (; i + 8 <= V; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
      float m = hmax(vm);
      for (; i < V; i++) m = std::max(m, x[i]);
      // x <- exp(x - m), Σ in f32 lanes.
      const __m256 vmax = _mm256_set1_ps(m);
      __m256 vs = _mm256_setzero_ps();
      i = 0;
      for (; i + 8 <= V; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
      }
      float sum = hsum(vs);
      const float xt = load_as_f32(logits, dtype, t * V + tgt);
      for (; i < V; i++) {
        x[i] = exp1(x[i] - m);
        sum += x[i];
      }
      const float lse = m + std::log(sum);
      losses[t] = w * (lse - xt);
      if (dlogits) {
        const float c = grad_scale * w / sum;
        scal_f32(x, c, V);
        x[tgt] -= grad_scale * w;
        store_row(dlogits, dtype, t * V, x, V);
      }
    }
  }
  return QL_OK;
}

// Fixed chunks (independent of the thread count) summed in order: deterministic.
ql_status sum_squares(ql_ctx* ctx, float* out, const float* g, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(nchunks));
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++) {
    const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16) {
      const __m256 a = _mm256_loadu_ps(g + i), b = _mm256_loadu_ps(g + i + 8);
      s0 = _mm256_fmadd_ps(a, a, s0);
      s1 = _mm256_fmadd_ps(b, b, s1);
    }
    double s = hsum(_mm256_add_ps(s0, s1));
    for (; i < i1; i++) s += double(g[i]) * g[i];
    part[size_t(c)] = s;
  }
  double total = 0.0;
  for (double p : part) total += p;
  out[0] = float(double(out[0]) + total);
  return QL_OK;
}

ql_status scale(ql_ctx* ctx, float* x, float alpha, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++) {
    const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
    scal_f32(x + i0, alpha, i1 - i0);
  }
  return QL_OK;
}

}  // namespace ql::cpu
