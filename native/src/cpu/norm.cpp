// norm.cpp — RMSNorm forward and backward (f32 statistics, rows in parallel).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

ql_status rmsnorm_forward(ql_ctx* ctx, void* out, float* rstd, const void* x, const float* weight,
                          int64_t T, int64_t C, float eps, int32_t dtype) {
#pragma omp parallel num_threads(threads(ctx)) if (T * C > 8192)
  {
    std::vector<float> row(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      load_row(row.data(), x, dtype, t * C, C);
      const float ss = dot_f32(row.data(), row.data(), C);
      const float r = 1.0f / std::sqrt(ss / float(C) + eps);
      if (rstd) rstd[t] = r;
      const __m256 vr = _mm256_set1_ps(r);
      int64_t i = 0;
      for (; i + 8 <= C; i += 8)
        _mm256_storeu_ps(row.data() + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row.data() + i), vr),
                                                       _mm256_loadu_ps(weight + i)));
      for (; i < C; i++) row[i] = row[i] * r * weight[i];
      store_row(out, dtype, t * C, row.data(), C);
    }
  }
  return QL_OK;
}

// y = w ⊙ x · r, r = (mean x² + eps)^(-1/2):
//   dx = r · (w ⊙ g) − x · r³ / C · Σ (w ⊙ g ⊙ x),   dw += Σ_t g ⊙ x · r.
ql_status rmsnorm_backward(ql_ctx* ctx, void* dx, float* dweight, const void* dout, const void* x,
                           const float* weight, const float* rstd, int64_t T, int64_t C,
                           int32_t dtype) {
  const int nt = (T * C > 8192) ? threads(ctx) : 1;
  std::vector<float> partial(dweight ? size_t(nt) * size_t(C) : 0, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> xr(static_cast<size_t>(C)), gr(static_cast<size_t>(C)), wg(static_cast<size_t>(C));
    float* dw = dweight ? partial.data() + size_t(omp_get_thread_num()) * size_t(C) : nullptr;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      load_row(xr.data(), x, dtype, t * C, C);
      load_row(gr.data(), dout, dtype, t * C, C);
      const float r = rstd[t];
      for (int64_t i = 0; i < C; i++) wg[i] = weight[i] * gr[i];
      const float s = dot_f32(wg.data(), xr.data(), C);
      const float c = -s * r * r * r / float(C);
      if (dw)
        for (int64_t i = 0; i < C; i++) dw[i] = std::fma(gr[i] * xr[i], r, dw[i]);
      // wg <- r · wg + c · x
      for (int64_t i = 0; i < C; i++) wg[i] = std::fma(c, xr[i], r * wg[i]);
      accumulate_row(dx, dtype, t * C, wg.data(), C);
    }
  }
  if (dweight)
    for (int th = 0; th < nt; th++) {
      const float* p = partial.data() + size_t(th) * size_t(C);
      for (int64_t i = 0; i < C; i++) dweight[i] += p[i];
    }
  return QL_OK;
}

}  // namespace ql::cpu
