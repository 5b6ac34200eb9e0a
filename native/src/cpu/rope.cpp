// rope.cpp — rotary position embedding, Hugging Face rotate_half layout (pairs (i, i + D/2)).
#include <cmath>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

// out = x·cos + rotate_half(x)·sin with sin negated for the inverse (transpose) rotation.
static void rope_apply(ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
                       const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype,
                       float sign) {
  const int64_t half = D / 2;
#pragma omp parallel num_threads(threads(ctx)) if (T * Hn * D > 16384)
  {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half)), row(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      const float pos = float(positions[t]);
      for (int64_t i = 0; i < half; i++) {
        // Angle rounded to f32 as in HF (float positions · float inv_freq), then cos/sin exact.
        const double a = double(pos * inv_freq[i]);
        cs[i] = float(std::cos(a));
        sn[i] = sign * float(std::sin(a));
      }
      for (int64_t h = 0; h < Hn; h++) {
        const int64_t off = (t * Hn + h) * D;
        load_row(row.data(), x, dtype, off, D);
        float* lo = row.data();
        float* hi = row.data() + half;
        int64_t i = 0;
        for (; i + 8 <= half; i += 8) {
          const __m256 a = _mm256_loadu_ps(lo + i), b = _mm256_loadu_ps(hi + i);
          const __m256 c = _mm256_loadu_ps(cs.data() + i), s = _mm256_loadu_ps(sn.data() + i);
          _mm256_storeu_ps(lo + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
          _mm256_storeu_ps(hi + i, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
        }
        for (; i < half; i++) {
          const float a = lo[i], b = hi[i];
          lo[i] = std::fma(a, cs[i], -(b * sn[i]));
          hi[i] = std::fma(b, cs[i], a * sn[i]);
        }
        store_row(out, dtype, off, row.data(), D);
      }
    }
  }
}

ql_status rope_forward(ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
                       const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype) {
  rope_apply(ctx, out, x, positions, inv_freq, T, Hn, D, dtype, 1.0f);
  return QL_OK;
}

ql_status rope_backward(ql_ctx* ctx, void* dx, const void* dout, const int32_t* positions,
                        const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype) {
  rope_apply(ctx, dx, dout, positions, inv_freq, T, Hn, D, dtype, -1.0f);
  return QL_OK;
}

}  // namespace ql::cpu
