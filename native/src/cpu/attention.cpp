// attention.cpp — causal attention on the CPU: paged KV cache (prefill + decode of many sequences
// in one call) and packed varlen training attention with its backward.
//
// Forward is flash-style: keys are processed in tiles of kKeyTile with an online softmax, so no
// T×T score matrix is ever formed. A work item is (sequence, kv head, tile of query rows) and
// covers all H/Hkv query heads of that kv head, so each K/V row is read once per tile for the
// whole group (grouped-query decode reads the cache once per kv head). Backward recomputes the
// probabilities from the saved log-sum-exp; its work item is (sequence, kv head), which owns its
// dK/dV rows and dQ rows, so there are no write races.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

namespace {

constexpr int64_t kKeyTile = 64;    // keys per online-softmax step (forward)
constexpr int64_t kRowTarget = 64;  // (query row, head) pairs per forward work item
constexpr int64_t kBwdKeyTile = 32;
constexpr int64_t kBwdQueryTile = 16;

inline int64_t pad8(int64_t d) { return (d + 7) & ~int64_t(7); }

// Where the K/V rows of one (sequence, kv head) live: element offset of token j's row.
struct KvRows {
  const void* k;
  const void* v;
  const int32_t* block_table;  // paged: this sequence's row of block_tables; null when packed
  int64_t block_size;
  int64_t first_token;  // packed: row of token 0
  int64_t row_stride;   // Hkv * D
  int64_t head_offset;  // g * D
  int64_t offset(int64_t j) const {
    const int64_t tok = block_table ? int64_t(block_table[j / block_size]) * block_size + j % block_size
                                    : first_token + j;
    return tok * row_stride + head_offset;
  }
};

// Per-thread scratch of the forward kernel.
struct FwdScratch {
  std::vector<float> q, acc, m, l, kc, vc, s;
  std::vector<int64_t> lim;
  std::vector<const float*> kp, vp;
  void init(int64_t max_rows, int64_t Dp) {
    q.assign(size_t(max_rows * Dp), 0.0f);
    acc.assign(size_t(max_rows * Dp), 0.0f);
    m.assign(size_t(max_rows), 0.0f);
    l.assign(size_t(max_rows), 0.0f);
    kc.assign(size_t(kKeyTile * Dp), 0.0f);
    vc.assign(size_t(kKeyTile * Dp), 0.0f);
    s.assign(size_t(kKeyTile + 8), 0.0f);
    lim.assign(size_t(max_rows), 0);
    kp.assign(size_t(kKeyTile), nullptr);
    vp.assign(size_t(kKeyTile), nullptr);
  }
};

// Online-softmax attention of M query rows (sc.q, already scaled, [M][Dp]) over keys
// [0, lim[r]) of kv. Leaves the unnormalized output in sc.acc, the running max in sc.m and the
// running sum in sc.l.
void attend_rows(FwdScratch& sc, int64_t M, const KvRows& kv, int32_t dtype, int64_t D) {
  const int64_t Dp = pad8(D);
  const bool direct = dtype == QL_F32 && D == Dp;
  int64_t maxlim = 0;
  for (int64_t r = 0; r < M; r++) {
    maxlim = std::max(maxlim, sc.lim[size_t(r)]);
    sc.m[size_t(r)] = -__builtin_inff();
    sc.l[size_t(r)] = 0.0f;
  }
  std::fill(sc.acc.begin(), sc.acc.begin() + M * Dp, 0.0f);
  float* s = sc.s.data();
  for (int64_t j0 = 0; j0 < maxlim; j0 += kKeyTile) {
    const int64_t n = std::min(kKeyTile, maxlim - j0);
    for (int64_t j = 0; j < n; j++) {
      const int64_t off = kv.offset(j0 + j);
      if (direct) {
        sc.kp[size_t(j)] = static_cast<const float*>(kv.k) + off;
        sc.vp[size_t(j)] = static_cast<const float*>(kv.v) + off;
      } else {
        float* kd = sc.kc.data() + j * Dp;
        float* vd = sc.vc.data() + j * Dp;
        load_row(kd, kv.k, dtype, off, D);
        load_row(vd, kv.v, dtype, off, D);
        sc.kp[size_t(j)] = kd;
        sc.vp[size_t(j)] = vd;
      }
    }
    for (int64_t r = 0; r < M; r++) {
      const int64_t nr = std::min(n, sc.lim[size_t(r)] - j0);
      if (nr <= 0) continue;
      const float* qr = sc.q.data() + r * Dp;
      float mc = -__builtin_inff();
      for (int64_t j = 0; j < nr; j++) {
        s[j] = dot_f32(qr, sc.kp[size_t(j)], Dp);
        mc = std::max(mc, s[j]);
      }
      const float mold = sc.m[size_t(r)];
      const float mnew = std::max(mold, mc);
      const float alpha = mold == -__builtin_inff() ? 0.0f : exp1(mold - mnew);
      const __m256 vm = _mm256_set1_ps(mnew);
      __m256 vs = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 8 <= nr; j += 8) {
        const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, p);
        vs = _mm256_add_ps(vs, p);
      }
      float sum = hsum(vs);
      for (; j < nr; j++) {
        s[j] = exp1(s[j] - mnew);
        sum += s[j];
      }
      sc.l[size_t(r)] = std::fma(sc.l[size_t(r)], alpha, sum);
      sc.m[size_t(r)] = mnew;
      float* ar = sc.acc.data() + r * Dp;
      if (alpha != 1.0f) scal_f32(ar, alpha, Dp);
      j = 0;
      // Two keys per pass over the accumulator halves its load/store traffic.
      for (; j + 2 <= nr; j += 2) {
        const __m256 p0 = _mm256_set1_ps(s[j]), p1 = _mm256_set1_ps(s[j + 1]);
        const float* v0 = sc.vp[size_t(j)];
        const float* v1 = sc.vp[size_t(j + 1)];
        for (int64_t d = 0; d < Dp; d += 8) {
          __m256 a = _mm256_loadu_ps(ar + d);
          a = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + d), a);
          a = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + d), a);
          _mm256_storeu_ps(ar + d, a);
        }
      }
      for (; j < nr; j++) axpy_f32(ar, s[j], sc.vp[size_t(j)], Dp);
    }
  }
}

struct FwdItem {
  int64_t s, g, i0, i1;  // sequence, kv head, query rows [i0, i1) within the sequence
};

}  // namespace

ql_status kv_cache_write(ql_ctx* ctx, void* k_cache, void* v_cache, const void* k, const void* v,
                         const int32_t* slots, int64_t T, int64_t num_blocks, int64_t block_size,
                         int64_t Hkv, int64_t D, int32_t dtype) {
  const int64_t nslots = num_blocks * block_size;
  for (int64_t t = 0; t < T; t++)
    if (slots[t] >= nslots)
      return ql_fail(QL_E_INVALID, "ql_kv_cache_write: slots[%lld] = %d is >= num_blocks * block_size = %lld",
                     (long long)t, slots[t], (long long)nslots);
  const int64_t row = Hkv * D;
  const size_t bytes = size_t(row) * act_size(dtype);
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (T * row > 65536)
  for (int64_t t = 0; t < T; t++) {
    if (slots[t] < 0) continue;
    const int64_t dst = int64_t(slots[t]) * row;
    memcpy(elem(k_cache, dtype, dst), elem(k, dtype, t * row), bytes);
    memcpy(elem(v_cache, dtype, dst), elem(v, dtype, t * row), bytes);
  }
  return QL_OK;
}

ql_status attention_paged(ql_ctx* ctx, void* out, const void* q, const void* k_cache,
                          const void* v_cache, const int32_t* host_block_tables,
                          const int32_t* host_q_start, const int32_t* host_ctx_lens, int64_t S,
                          int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t H,
                          int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype) {
  const int64_t G = H / Hkv, Dp = pad8(D);
  const int64_t rows_per_item = std::max<int64_t>(1, kRowTarget / G);
  std::vector<FwdItem> items;
  for (int64_t s = 0; s < S; s++) {
    const int64_t q_len = host_q_start[s + 1] - host_q_start[s];
    for (int64_t i0 = 0; i0 < q_len; i0 += rows_per_item)
      for (int64_t g = 0; g < Hkv; g++) items.push_back({s, g, i0, std::min(q_len, i0 + rows_per_item)});
  }
  const int64_t nitems = int64_t(items.size());
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads(ctx), nitems)));
#pragma omp parallel num_threads(nt)
  {
    FwdScratch sc;
    sc.init(rows_per_item * G, Dp);
    std::vector<float> row(size_t(Dp));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
      const FwdItem& w = items[size_t(it)];
      const int64_t qs = host_q_start[w.s], q_len = host_q_start[w.s + 1] - qs;
      const int64_t past = int64_t(host_ctx_lens[w.s]) - q_len;
      const KvRows kv{k_cache, v_cache, host_block_tables + w.s * max_blocks, block_size, 0, Hkv * D, w.g * D};
      const int64_t M = (w.i1 - w.i0) * G;
      for (int64_t r = 0; r < M; r++) {
        const int64_t i = w.i0 + r / G, h = w.g * G + r % G;
        float* qr = sc.q.data() + r * Dp;
        load_row(qr, q, dtype, ((qs + i) * H + h) * D, D);
        scal_f32(qr, softmax_scale, D);
        sc.lim[size_t(r)] = past + i + 1;
      }
      attend_rows(sc, M, kv, dtype, D);
      for (int64_t r = 0; r < M; r++) {
        const int64_t i = w.i0 + r / G, h = w.g * G + r % G;
        const float* ar = sc.acc.data() + r * Dp;
        const float inv = 1.0f / sc.l[size_t(r)];
        for (int64_t d = 0; d < D; d++) row[size_t(d)] = ar[d] * inv;
        store_row(out, dtype, ((qs + i) * H + h) * D, row.data(), D);
      }
    }
  }
  return QL_OK;
}

ql_status attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q, const void* k,
                            const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                            int64_t H, int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype) {
  const int64_t G = H / Hkv, Dp = pad8(D);
  const int64_t rows_per_item = std::max<int64_t>(1, kRowTarget / G);
  std::vector<FwdItem> items;
  for (int64_t s = 0; s < S; s++) {
    const int64_t len = host_cu_seqlens[s + 1] - host_cu_seqlens[s];
    for (int64_t i0 = 0; i0 < len; i0 += rows_per_item)
      for (int64_t g = 0; g < Hkv; g++) items.push_back({s, g, i0, std::min(len, i0 + rows_per_item)});
  }
  // Longest work (late query tiles of long sequences) first.
  std::stable_sort(items.begin(), items.end(), [](const FwdItem& a, const FwdItem& b) { return a.i1 > b.i1; });
  const int64_t nitems = int64_t(items.size());
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads(ctx), nitems)));
#pragma omp parallel num_threads(nt)
  {
    FwdScratch sc;
    sc.init(rows_per_item * G, Dp);
    std::vector<float> row(size_t(Dp));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
      const FwdItem& w = items[size_t(it)];
      const int64_t t0 = host_cu_seqlens[w.s];
      const KvRows kv{k, v, nullptr, 1, t0, Hkv * D, w.g * D};
      const int64_t M = (w.i1 - w.i0) * G;
      for (int64_t r = 0; r < M; r++) {
        const int64_t i = w.i0 + r / G, h = w.g * G + r % G;
        float* qr = sc.q.data() + r * Dp;
        load_row(qr, q, dtype, ((t0 + i) * H + h) * D, D);
        scal_f32(qr, softmax_scale, D);
        sc.lim[size_t(r)] = i + 1;
      }
      attend_rows(sc, M, kv, dtype, D);
      for (int64_t r = 0; r < M; r++) {
        const int64_t i = w.i0 + r / G, h = w.g * G + r % G;
        const float* ar = sc.acc.data() + r * Dp;
        const float inv = 1.0f / sc.l[size_t(r)];
        for (int64_t d = 0; d < D; d++) row[size_t(d)] = ar[d] * inv;
        store_row(out, dtype, ((t0 + i) * H + h) * D, row.data(), D);
        lse[(t0 + i) * H + h] = sc.m[size_t(r)] + std::log(sc.l[size_t(r)]);
      }
    }
  }
  return QL_OK;
}

// With P = exp(scale · Q Kᵀ − lse) (causal), Dᵢ = Σ dOᵢ ⊙ Oᵢ:
//   dV = Pᵀ dO,  dS = P ⊙ (dO Vᵀ − D),  dQ = scale · dS K,  dK = scale · dSᵀ Q.
ql_status attention_backward(ql_ctx* ctx, void* dq, void* dk, void* dv, const void* dout,
                             const void* out, const float* lse, const void* q, const void* k,
                             const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                             int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                             int32_t dtype) {
  const int64_t G = H / Hkv, Dp = pad8(D);
  struct Item {
    int64_t s, g, len;
  };
  std::vector<Item> items;
  for (int64_t s = 0; s < S; s++) {
    const int64_t len = host_cu_seqlens[s + 1] - host_cu_seqlens[s];
    if (len > 0)
      for (int64_t g = 0; g < Hkv; g++) items.push_back({s, g, len});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.len > b.len; });
  const int64_t nitems = int64_t(items.size());
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads(ctx), nitems)));
  const int64_t MQ = kBwdQueryTile * G;
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> kf, vf, dkf, dvf;
    std::vector<float> qf(size_t(MQ * Dp), 0.0f), dof(size_t(MQ * Dp), 0.0f), dqf(size_t(MQ * Dp));
    std::vector<float> lrow(size_t(MQ)), drow(size_t(MQ)), p(size_t(kBwdKeyTile + 8)), orow(size_t(Dp));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
      const Item& w = items[size_t(it)];
      const int64_t t0 = host_cu_seqlens[w.s], L = w.len;
      kf.assign(size_t(L * Dp), 0.0f);
      vf.assign(size_t(L * Dp), 0.0f);
      dkf.assign(size_t(L * Dp), 0.0f);
      dvf.assign(size_t(L * Dp), 0.0f);
      for (int64_t j = 0; j < L; j++) {
        load_row(kf.data() + j * Dp, k, dtype, ((t0 + j) * Hkv + w.g) * D, D);
        load_row(vf.data() + j * Dp, v, dtype, ((t0 + j) * Hkv + w.g) * D, D);
      }
      for (int64_t i0 = 0; i0 < L; i0 += kBwdQueryTile) {
        const int64_t i1 = std::min(L, i0 + kBwdQueryTile);
        const int64_t M = (i1 - i0) * G;
        for (int64_t r = 0; r < M; r++) {
          const int64_t i = i0 + r / G, h = w.g * G + r % G;
          const int64_t off = ((t0 + i) * H + h) * D;
          load_row(qf.data() + r * Dp, q, dtype, off, D);
          load_row(dof.data() + r * Dp, dout, dtype, off, D);
          load_row(orow.data(), out, dtype, off, D);
          drow[size_t(r)] = dot_f32(dof.data() + r * Dp, orow.data(), D);
          lrow[size_t(r)] = lse[(t0 + i) * H + h];
        }
        std::fill(dqf.begin(), dqf.begin() + M * Dp, 0.0f);
        for (int64_t j0 = 0; j0 < i1; j0 += kBwdKeyTile) {
          const int64_t j1 = std::min(i1, j0 + kBwdKeyTile);
          for (int64_t r = 0; r < M; r++) {
            const int64_t i = i0 + r / G;
            const int64_t n = std::min(j1, i + 1) - j0;
            if (n <= 0) continue;
            const float* qr = qf.data() + r * Dp;
            const float* dor = dof.data() + r * Dp;
            float* dqr = dqf.data() + r * Dp;
            const float lr = lrow[size_t(r)], dr = drow[size_t(r)];
            for (int64_t j = 0; j < n; j++) p[size_t(j)] = softmax_scale * dot_f32(qr, kf.data() + (j0 + j) * Dp, Dp) - lr;
            int64_t j = 0;
            for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p.data() + j, exp8(_mm256_loadu_ps(p.data() + j)));
            for (; j < n; j++) p[size_t(j)] = exp1(p[size_t(j)]);
            for (j = 0; j < n; j++) {
              const float pj = p[size_t(j)];
              const int64_t kj = (j0 + j) * Dp;
              axpy_f32(dvf.data() + kj, pj, dor, Dp);
              const float dp = dot_f32(dor, vf.data() + kj, Dp);
              const float ds = softmax_scale * pj * (dp - dr);
              axpy_f32(dqr, ds, kf.data() + kj, Dp);
              axpy_f32(dkf.data() + kj, ds, qr, Dp);
            }
          }
        }
        for (int64_t r = 0; r < M; r++) {
          const int64_t i = i0 + r / G, h = w.g * G + r % G;
          store_row(dq, dtype, ((t0 + i) * H + h) * D, dqf.data() + r * Dp, D);
        }
      }
      for (int64_t j = 0; j < L; j++) {
        store_row(dk, dtype, ((t0 + j) * Hkv + w.g) * D, dkf.data() + j * Dp, D);
        store_row(dv, dtype, ((t0 + j) * Hkv + w.g) * D, dvf.data() + j * Dp, D);
      }
    }
  }
  return QL_OK;
}

}  // namespace ql::cpu
