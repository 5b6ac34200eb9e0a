// mlp.cpp — SwiGLU activation (silu(gate) · up) forward/backward and the scaled add.
#include <algorithm>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per parallel chunk

// Runs fn(i, in0, in1, in2, outs) over [0, n) in 8-lane blocks; the tail goes through zero-padded
// scratch so every element sees the same vector arithmetic. All inputs of a block are loaded
// before any output is stored, so outputs may alias inputs element-wise.
template <int NIn, int NOut, class F>
void elementwise(ql_ctx* ctx, int64_t n, int32_t dtype, const void* const (&in)[NIn],
                 void* const (&out)[NOut], F fn) {
  const int64_t nchunks = (n + kGrain - 1) / kGrain;
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++) {
    const int64_t i0 = c * kGrain, i1 = std::min(n, i0 + kGrain);
    __m256 a[NIn], r[NOut];
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
      for (int k = 0; k < NIn; k++) a[k] = load8(in[k], dtype, i);
      fn(a, r);
      for (int k = 0; k < NOut; k++) store8(out[k], dtype, i, r[k]);
    }
    if (i < i1) {
      const int64_t m = i1 - i;
      alignas(32) float buf[8];
      for (int k = 0; k < NIn; k++) {
        for (int j = 0; j < 8; j++) buf[j] = 0.0f;
        load_row(buf, in[k], dtype, i, m);
        a[k] = _mm256_load_ps(buf);
      }
      fn(a, r);
      for (int k = 0; k < NOut; k++) {
        _mm256_store_ps(buf, r[k]);
        store_row(out[k], dtype, i, buf, m);
      }
    }
  }
}

inline __m256 sigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

}  // namespace

ql_status silu_mul_forward(ql_ctx* ctx, void* out, const void* gate, const void* up, int64_t n,
                           int32_t dtype) {
  const void* const in[2] = {gate, up};
  void* const outs[1] = {out};
  elementwise(ctx, n, dtype, in, outs, [](const __m256* a, __m256* r) {
    r[0] = _mm256_mul_ps(_mm256_mul_ps(a[0], sigmoid8(a[0])), a[1]);
  });
  return QL_OK;
}

// h = g·σ(g):  dgate = dout · up · σ(g)(1 + g(1 − σ(g))),  dup = dout · h.
ql_status silu_mul_backward(ql_ctx* ctx, void* dgate, void* dup, const void* dout,
                            const void* gate, const void* up, int64_t n, int32_t dtype) {
  const void* const in[3] = {dout, gate, up};
  void* const outs[2] = {dgate, dup};
  elementwise(ctx, n, dtype, in, outs, [](const __m256* a, __m256* r) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 s = sigmoid8(a[1]);
    const __m256 ds = _mm256_mul_ps(s, _mm256_fmadd_ps(a[1], _mm256_sub_ps(one, s), one));
    r[0] = _mm256_mul_ps(_mm256_mul_ps(a[0], a[2]), ds);
    r[1] = _mm256_mul_ps(a[0], _mm256_mul_ps(a[1], s));
  });
  return QL_OK;
}

ql_status add(ql_ctx* ctx, void* out, const void* a, const void* b, float alpha, int64_t n,
              int32_t dtype) {
  const void* const in[2] = {a, b};
  void* const outs[1] = {out};
  const __m256 va = _mm256_set1_ps(alpha);
  elementwise(ctx, n, dtype, in, outs,
              [va](const __m256* x, __m256* r) { r[0] = _mm256_fmadd_ps(va, x[1], x[0]); });
  return QL_OK;
}

}  // namespace ql::cpu
