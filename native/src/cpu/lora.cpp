// lora.cpp — LoRA forward/backward with seeded dropout (common/lora_math.h) and the
// multi-adapter serving forward.
//
// Multi-adapter (S-LoRA / Punica's SGMV idea): the rows with an adapter are grouped by adapter and
// go through one parallel region in two phases: shrink xa_t = x_t · A_aᵀ (work items (group, j):
// row j of A, read once, against every row of the group; mixed ranks balance across threads),
// then expand y_t += scale_a · B_a · xa_t (work items (group, output block), eight outputs at a
// time, each 8-row slice of B applied to every row of the group while it is in L1). So a group of
// rows costs one read of its adapter, not one per row. No rank is padded, and a row's result does
// not depend on which other rows share the batch (the same dot products, the same summation
// order), so a mixed batch equals each row run alone bit for bit. (A per-adapter GEMM for large
// groups would be faster for long prefills but breaks that.)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "common/lora_math.h"
#include "cpu/linalg.h"

namespace ql::cpu {

// out [n] f32 = x [n] of dtype; bf16 widening is a shift, vectorized and parallel.
static void widen(float* out, const void* x, int32_t dtype, int64_t n, int nthreads) {
  if (dtype == QL_F32) {
    memcpy(out, x, size_t(n) * 4);
    return;
  }
  const uint16_t* h = static_cast<const uint16_t*>(x);
  uint32_t* o = reinterpret_cast<uint32_t*>(out);
#pragma omp parallel for simd num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t e = 0; e < n; e++) o[e] = uint32_t(h[e]) << 16;
}

// y [n] (dtype) += d [n] f32
static void add_into(void* y, int32_t dtype, const float* d, int64_t n, int nthreads) {
  if (dtype == QL_F32) {
    float* yf = static_cast<float*>(y);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 65536)
    for (int64_t e = 0; e < n; e++) yf[e] += d[e];
    return;
  }
  uint16_t* yh = static_cast<uint16_t*>(y);
  // round to nearest even, NaN kept quiet: written branch-free so the compiler vectorizes it
#pragma omp parallel for simd num_threads(nthreads) schedule(static) if (n > 65536)
  for (int64_t e = 0; e < n; e++) {
    const float f = bits_to_f32(uint32_t(yh[e]) << 16) + d[e];
    const uint32_t u = f32_to_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    yh[e] = uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
  }
}

// Per-thread scratch reused across calls: no allocation or page faults per call.
static float* scratch(int slot, size_t n) {
  static thread_local std::vector<float> bufs[4];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

// xd [T, in] f32 = drop(x): kept elements times 1 / (1 - p), dropped ones 0.
static void dropout_x(float* xd, const void* x, int32_t dtype, int64_t T, int64_t in, float p,
                      uint64_t seed, int nthreads) {
  const int64_t n = T * in;
  widen(xd, x, dtype, n, nthreads);
  if (p <= 0.0f) return;
  const uint64_t key = lora_dropout_key(seed);
  const float inv = 1.0f / (1.0f - p);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n > 32768)
  for (int64_t e = 0; e < n; e++) xd[e] = lora_dropout_keep(key, uint64_t(e), p) ? xd[e] * inv : 0.0f;
}

ql_status lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
                       const float* B, int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                       float dropout_p, uint64_t seed, int32_t dtype) {
  const int nth = threads(ctx);
  const float* xd = static_cast<const float*>(x);
  if (dtype != QL_F32 || dropout_p > 0.0f) {
    float* buf = scratch(0, size_t(T * in));
    dropout_x(buf, x, dtype, T, in, dropout_p, seed, nth);
    xd = buf;
  }
  float* xap = xa ? xa : scratch(1, size_t(T * r));
  sgemm(nth, false, true, T, r, in, 1.0f, xd, in, A, in, 0.0f, xap, r);
  if (dtype == QL_F32) {
    sgemm(nth, false, true, T, out, r, scale, xap, r, B, r, 1.0f, static_cast<float*>(y), out);
    return QL_OK;
  }
  float* tmp = scratch(2, size_t(T * out));
  sgemm(nth, false, true, T, out, r, scale, xap, r, B, r, 0.0f, tmp, out);
  add_into(y, dtype, tmp, T * out, nth);
  return QL_OK;
}

ql_status lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy,
                        const void* x, const float* xa, const float* A, const float* B, int64_t T,
                        int64_t in, int64_t out, int64_t r, float scale, float dropout_p,
                        uint64_t seed, int32_t dtype) {
  const int nth = threads(ctx);
  const float* dyf = static_cast<const float*>(dy);
  if (dtype != QL_F32) {
    float* buf = scratch(0, size_t(T * out));
    widen(buf, dy, dtype, T * out, nth);
    dyf = buf;
  }
  // g [T, r] = scale · dy · B  (gradient of xa)
  float* g = scratch(1, size_t(T * r));
  sgemm(nth, false, false, T, r, out, scale, dyf, out, B, r, 0.0f, g, r);
  // dB [out, r] += scale · dyᵀ · xa
  sgemm(nth, true, false, out, r, T, scale, dyf, out, xa, r, 1.0f, dB, r);
  // dA [r, in] += gᵀ · drop(x)
  const float* xd = static_cast<const float*>(x);
  if (dtype != QL_F32 || dropout_p > 0.0f) {
    float* buf = scratch(2, size_t(T * in));
    dropout_x(buf, x, dtype, T, in, dropout_p, seed, nth);
    xd = buf;
  }
  sgemm(nth, true, false, r, in, T, 1.0f, g, r, xd, in, 1.0f, dA, in);
  if (!dx) return QL_OK;
  // dx [T, in] += mask / (1 - p) ⊙ (g · A)
  if (dtype == QL_F32 && dropout_p == 0.0f) {
    sgemm(nth, false, false, T, in, r, 1.0f, g, r, A, in, 1.0f, static_cast<float*>(dx), in);
    return QL_OK;
  }
  float* tmp = scratch(3, size_t(T * in));
  sgemm(nth, false, false, T, in, r, 1.0f, g, r, A, in, 0.0f, tmp, in);
  const int64_t n = T * in;
  if (dropout_p > 0.0f) {
    const uint64_t key = lora_dropout_key(seed);
    const float inv = 1.0f / (1.0f - dropout_p);
#pragma omp parallel for num_threads(nth) schedule(static) if (n > 32768)
    for (int64_t e = 0; e < n; e++) tmp[e] = lora_dropout_keep(key, uint64_t(e), dropout_p) ? tmp[e] * inv : 0.0f;
  }
  add_into(dx, dtype, tmp, n, nth);
  return QL_OK;
}

// ---------------------------------------------------------------- multi-adapter forward

static inline float hsum8(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// Σ a[i] b[i], fixed order: four 8-wide accumulators, then the scalar tail.
static inline float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// out[k] = Σ_j B[(o + k) * r + j] · xa[j] for k < 8 (eight rows of B against xa).
static inline __m256 dot8(const float* B, int64_t r, const float* xa) {
  __m256 acc[8];
  for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= r; j += 8) {
    const __m256 xv = _mm256_loadu_ps(xa + j);
    for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(B + k * r + j), xv, acc[k]);
  }
  // transpose-reduce: lane k of the result = horizontal sum of acc[k]
  const __m256 h01 = _mm256_hadd_ps(acc[0], acc[1]), h23 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 h45 = _mm256_hadd_ps(acc[4], acc[5]), h67 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  // h0123 = [s0l s1l s2l s3l | s0h s1h s2h s3h] (l/h: 128-bit halves)
  const __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
  __m256 s = _mm256_add_ps(lo, hi);
  if (j < r) {
    alignas(32) float t[8];
    _mm256_store_ps(t, s);
    for (int k = 0; k < 8; k++)
      for (int64_t jj = j; jj < r; jj++) t[k] += B[k * r + jj] * xa[jj];
    s = _mm256_load_ps(t);
  }
  return s;
}

ql_status lora_multi_forward(ql_ctx* ctx, void* y, const void* x, const int32_t* host_row_adapter,
                             const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs,
                             const int32_t* host_ranks, const float* host_scales,
                             int64_t n_adapters, int64_t T, int64_t in, int64_t out,
                             int32_t dtype) {
  const int nth = threads(ctx);
  // SGMV: the rows with an adapter, grouped by adapter (stable counting sort); group g owns
  // rows[gstart[g] .. gstart[g + 1]) and adapter gad[g].
  std::vector<int64_t> count(size_t(n_adapters) + 1, 0);
  for (int64_t t = 0; t < T; t++)
    if (host_row_adapter[t] >= 0) count[size_t(host_row_adapter[t]) + 1]++;
  for (int64_t a = 0; a < n_adapters; a++) count[size_t(a) + 1] += count[size_t(a)];
  const int64_t nr = count[size_t(n_adapters)];
  if (nr == 0) return QL_OK;
  std::vector<int64_t> rows(static_cast<size_t>(nr));
  {
    std::vector<int64_t> pos(count.begin(), count.end() - 1);
    for (int64_t t = 0; t < T; t++)
      if (host_row_adapter[t] >= 0) {
        const int64_t i = pos[size_t(host_row_adapter[t])]++;
        rows[size_t(i)] = t;
      }
  }
  std::vector<int64_t> gstart;
  std::vector<int32_t> gad;
  for (int64_t a = 0; a < n_adapters; a++)
    if (count[size_t(a) + 1] > count[size_t(a)]) {
      gstart.push_back(count[size_t(a)]);
      gad.push_back(int32_t(a));
    }
  gstart.push_back(nr);
  const int64_t ng = int64_t(gad.size());
  // xa of row slot i: xa[xa_off[i] .. + r)
  std::vector<int64_t> xa_off(size_t(nr + 1), 0);
  for (int64_t i = 0; i < nr; i++) xa_off[size_t(i) + 1] = xa_off[size_t(i)] + host_ranks[host_row_adapter[rows[size_t(i)]]];
  // shrink items: (group, j), flattened by item_off (group g has r_g items)
  std::vector<int64_t> item_off(size_t(ng + 1), 0);
  for (int64_t g = 0; g < ng; g++) item_off[size_t(g) + 1] = item_off[size_t(g)] + host_ranks[gad[size_t(g)]];
  const int64_t n_items = item_off[size_t(ng)];
  std::vector<float> xr(dtype == QL_F32 ? 0 : size_t(nr * in)), xa(static_cast<size_t>(xa_off[size_t(nr)]));
  constexpr int64_t kOutBlock = 256;
  const int64_t n_oblk = (out + kOutBlock - 1) / kOutBlock;
#pragma omp parallel num_threads(nth)
  {
    if (dtype != QL_F32) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < nr; i++)
        for (int64_t c = 0; c < in; c++) xr[i * in + c] = load_as_f32(x, dtype, rows[i] * in + c);
    }
    // shrink: row j of the group's A (read once, from L1 for the group's later rows) against
    // every row of the group
#pragma omp for schedule(static)
    for (int64_t k = 0; k < n_items; k++) {
      const int64_t g = int64_t(std::upper_bound(item_off.begin(), item_off.end(), k) - item_off.begin()) - 1;
      const int64_t j = k - item_off[g];
      const float* Aj = reinterpret_cast<const float*>(host_a_ptrs[gad[g]]) + j * in;
      for (int64_t i = gstart[g]; i < gstart[g + 1]; i++) {
        const float* xt = dtype == QL_F32 ? static_cast<const float*>(x) + rows[i] * in : xr.data() + i * in;
        xa[xa_off[i] + j] = dot(xt, Aj, in);
      }
    }
    // expand: (group, block of outputs); each 8-row slice of the group's B is applied to every
    // row of the group while it is in L1
#pragma omp for schedule(static)
    for (int64_t item = 0; item < ng * n_oblk; item++) {
      const int64_t g = item / n_oblk, ob = item % n_oblk;
      const int32_t a = gad[g];
      const int64_t r = host_ranks[a];
      const float* B = reinterpret_cast<const float*>(host_b_ptrs[a]);
      const __m256 sc = _mm256_set1_ps(host_scales[a]);
      const int64_t o0 = ob * kOutBlock, o1 = std::min(out, o0 + kOutBlock);
      int64_t o = o0;
      for (; o + 8 <= o1; o += 8) {
        for (int64_t i = gstart[g]; i < gstart[g + 1]; i++) {
          const int64_t t = rows[i];
          const __m256 s = _mm256_mul_ps(sc, dot8(B + o * r, r, xa.data() + xa_off[i]));
          if (dtype == QL_F32) {
            float* yt = static_cast<float*>(y) + t * out + o;
            _mm256_storeu_ps(yt, _mm256_add_ps(_mm256_loadu_ps(yt), s));
          } else {
            alignas(32) float tmp[8];
            _mm256_store_ps(tmp, s);
            for (int k = 0; k < 8; k++)
              store_from_f32(y, dtype, t * out + o + k, load_as_f32(y, dtype, t * out + o + k) + tmp[k]);
          }
        }
      }
      for (; o < o1; o++)
        for (int64_t i = gstart[g]; i < gstart[g + 1]; i++) {
          const int64_t t = rows[i];
          const float s = host_scales[a] * dot(B + o * r, xa.data() + xa_off[i], r);
          store_from_f32(y, dtype, t * out + o, load_as_f32(y, dtype, t * out + o) + s);
        }
    }
  }
  return QL_OK;
}

}  // namespace ql::cpu
