// gemm.cpp — dense GEMM through oneDNN: float32 via dnnl_sgemm, bf16 via the matmul primitive
// (cached per shape), and the ql_gemm entry (mixed dtypes are converted to float32).
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "common/half.h"
#include "cpu/linalg.h"

namespace ql::cpu {

void sgemm(int nthreads, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // nothing to multiply: c = beta · c
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  OmpThreads omp(nthreads);
  dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                beta, c, ldc);
  if (st != dnnl_success) throw std::runtime_error("dnnl_sgemm failed");
}

namespace {

using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       float, float, int32_t>;

struct Cache {
  std::mutex mu;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  std::map<Key, std::shared_ptr<dnnl::matmul>> prims;
};
Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: outlives every context
  return *c;
}

}  // namespace

void bgemm(int nthreads, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
           const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, void* c,
           int32_t c_dtype, int64_t ldc) {
  using dt = dnnl::memory::data_type;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        store_from_f32(c, c_dtype, i * ldc + j,
                       beta == 0.0f ? 0.0f : beta * load_as_f32(c, c_dtype, i * ldc + j));
    return;
  }
  OmpThreads omp(nthreads);
  Cache& C = cache();
  const dnnl::memory::desc a_md({m, k}, dt::bf16, ta ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
  const dnnl::memory::desc b_md({k, n}, dt::bf16, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
  const dnnl::memory::desc c_md({m, n}, c_dtype == QL_F32 ? dt::f32 : dt::bf16, dnnl::memory::dims{ldc, 1});
  const Key key{nthreads, ta, tb, m, n, k, lda, ldb, ldc, alpha, beta, c_dtype};
  std::shared_ptr<dnnl::matmul> prim;
  {
    std::lock_guard<std::mutex> lock(C.mu);
    auto it = C.prims.find(key);
    if (it != C.prims.end()) prim = it->second;
  }
  if (!prim) {
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    dnnl::matmul::desc d(a_md, b_md, c_md);
    dnnl::matmul::primitive_desc pd(d, attr, C.eng);
    prim = std::make_shared<dnnl::matmul>(pd);
    std::lock_guard<std::mutex> lock(C.mu);
    if (C.prims.size() > 4096) C.prims.clear();
    C.prims.emplace(key, prim);
  }
  dnnl::memory am(a_md, C.eng, const_cast<uint16_t*>(a));
  dnnl::memory bm(b_md, C.eng, const_cast<uint16_t*>(b));
  dnnl::memory cm(c_md, C.eng, c);
  dnnl::stream s(C.eng);
  prim->execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  s.wait();
}

static std::vector<float> to_f32(const void* p, int64_t n, int nthreads) {
  std::vector<float> out(static_cast<size_t>(n));
  const uint16_t* h = static_cast<const uint16_t*>(p);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(h[i]);
  return out;
}

// Few rows against a stored-transposed weight (decode's lm_head: x [m, k] · W[n, k]ᵀ with
// m ≤ 8): bandwidth-bound, so W is streamed once, each row dotted with all m activation rows in
// float32 FMAs (bf16 W widened in registers; never converted as a whole). Rows of W are split
// across threads. Exact float32 arithmetic, like the general path.
static constexpr int64_t kGemvMaxRows = 8;

static inline __m256 load8_as_f32(const void* p, int32_t dtype, int64_t i) {
  if (dtype == QL_F32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float hsum(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

static void gemv_rows(int nthreads, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
                      const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k, float alpha,
                      float beta) {
  // activations widened once (m·k floats, small)
  std::vector<float> x(size_t(m * k));
  for (int64_t i = 0; i < m * k; i++) x[size_t(i)] = load_as_f32(a, a_dtype, i);
  const int64_t k8 = k & ~int64_t(7);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n * k > 65536)
  for (int64_t j = 0; j < n; j++) {
    const int64_t row = j * k;
    __m256 acc[kGemvMaxRows];
    for (int64_t r = 0; r < m; r++) acc[r] = _mm256_setzero_ps();
    int64_t i0 = 0;
    if (m == 1) {
      // one row: four independent chains, or the FMA latency (not memory) sets the pace
      __m256 a1 = _mm256_setzero_ps(), a2 = a1, a3 = a1;
      for (; i0 + 32 <= k8; i0 += 32) {
        acc[0] = _mm256_fmadd_ps(load8_as_f32(b, b_dtype, row + i0), _mm256_loadu_ps(&x[size_t(i0)]), acc[0]);
        a1 = _mm256_fmadd_ps(load8_as_f32(b, b_dtype, row + i0 + 8), _mm256_loadu_ps(&x[size_t(i0 + 8)]), a1);
        a2 = _mm256_fmadd_ps(load8_as_f32(b, b_dtype, row + i0 + 16), _mm256_loadu_ps(&x[size_t(i0 + 16)]), a2);
        a3 = _mm256_fmadd_ps(load8_as_f32(b, b_dtype, row + i0 + 24), _mm256_loadu_ps(&x[size_t(i0 + 24)]), a3);
      }
      acc[0] = _mm256_add_ps(_mm256_add_ps(acc[0], a1), _mm256_add_ps(a2, a3));
    }
    for (int64_t i = i0; i < k8; i += 8) {
      const __m256 w = load8_as_f32(b, b_dtype, row + i);
      for (int64_t r = 0; r < m; r++) acc[r] = _mm256_fmadd_ps(w, _mm256_loadu_ps(&x[size_t(r * k + i)]), acc[r]);
    }
    for (int64_t r = 0; r < m; r++) {
      float sum = hsum(acc[r]);
      for (int64_t i = k8; i < k; i++) sum += load_as_f32(b, b_dtype, row + i) * x[size_t(r * k + i)];
      const int64_t e = r * n + j;
      const float prev = beta != 0.0f ? beta * load_as_f32(c, c_dtype, e) : 0.0f;
      store_from_f32(c, c_dtype, e, alpha * sum + prev);
    }
  }
}

ql_status gemm(ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
               const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k, int32_t trans_a,
               int32_t trans_b, float alpha, float beta) {
  const int nth = threads(ctx);
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  if (m <= kGemvMaxRows && !trans_a && trans_b && n * k >= (int64_t(1) << 20)) {
    gemv_rows(nth, c, c_dtype, a, a_dtype, b, b_dtype, m, n, k, alpha, beta);
    return QL_OK;
  }
  // bf16 x bf16 on oneDNN's bf16 matmul where the CPU has AVX-512 BF16 (elsewhere oneDNN would
  // fall back to a slow reference kernel, so the float32 path below is used instead).
  if (a_dtype == QL_BF16 && b_dtype == QL_BF16 && state(ctx).avx512) {
    bgemm(nth, trans_a, trans_b, m, n, k, alpha, static_cast<const uint16_t*>(a), lda,
          static_cast<const uint16_t*>(b), ldb, beta, c, c_dtype, n);
    return QL_OK;
  }
  // At least one float32 operand: compute in float32 (bf16 operands widened exactly).
  std::vector<float> af, bf, cf;
  const float* ap = static_cast<const float*>(a);
  const float* bp = static_cast<const float*>(b);
  if (a_dtype == QL_BF16) ap = (af = to_f32(a, m * k, nth)).data();
  if (b_dtype == QL_BF16) bp = (bf = to_f32(b, k * n, nth)).data();
  if (c_dtype == QL_F32) {
    sgemm(nth, trans_a, trans_b, m, n, k, alpha, ap, lda, bp, ldb, beta, static_cast<float*>(c), n);
    return QL_OK;
  }
  if (beta != 0.0f) cf = to_f32(c, m * n, nth);
  else cf.resize(size_t(m * n));
  sgemm(nth, trans_a, trans_b, m, n, k, alpha, ap, lda, bp, ldb, beta, cf.data(), n);
  uint16_t* ch = static_cast<uint16_t*>(c);
  const int64_t mn = m * n;
#pragma omp parallel for num_threads(nth) schedule(static) if (mn > 65536)
  for (int64_t i = 0; i < mn; i++) ch[i] = f32_to_bf16(cf[i]);
  return QL_OK;
}

}  // namespace ql::cpu
