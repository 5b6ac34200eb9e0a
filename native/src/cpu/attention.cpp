// attention.cpp — causal attention on the CPU: paged KV cache (prefill + decode of many sequences
// in one call) and packed varlen training attention with its backward.
//
// Forward is flash-style: keys are processed in tiles with an online softmax (running max, sum
// and unnormalized output per query row), so no T×T score matrix is ever formed; four query rows
// share every K/V vector load. Two kinds of work items:
//  - prefill (more than kDecodeMaxQ queries): (sequence, kv head, tile of query rows) covering
//    the H/Hkv query heads of that kv head; each K/V tile is gathered into contiguous f32 scratch
//    once and reused by up to 64 rows.
//  - decode (few queries): (sequence, chunk of kSplitKeys keys) covering every head; it walks the
//    cache rows token by token (all kv heads of a token are contiguous), reads bf16 in place,
//    prefetches the next tokens, and long sequences are split at fixed key boundaries whose
//    partial softmax states are merged at the end. Splits never depend on the batch, so a
//    sequence gives bit-identical output alone or batched.
// Backward recomputes the probabilities from the saved log-sum-exp; its work item is
// (sequence, kv head), which owns its dK/dV rows and dQ rows, so there are no write races.
#include <algorithm>
#include <cmath>
#include <type_traits>
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

// Per-thread key/value tile scratch of the forward kernel.
struct TileScratch {
  std::vector<float> kc, vc, s;
  std::vector<const float*> kp, vp;
  std::vector<const uint16_t*> kh, vh;
  int64_t Dp;
  // kc/vc (the gather scratch) are allocated on first use: decode reads the cache in place.
  explicit TileScratch(int64_t dp)
      : s(size_t(4 * (kKeyTile + 8)), 0.0f),
        kp(size_t(kKeyTile), nullptr),
        vp(size_t(kKeyTile), nullptr),
        kh(size_t(kKeyTile), nullptr),
        vh(size_t(kKeyTile), nullptr),
        Dp(dp) {}
  void ensure_gather() {
    if (kc.empty()) {
      kc.assign(size_t(kKeyTile * Dp), 0.0f);
      vc.assign(size_t(kKeyTile * Dp), 0.0f);
    }
  }
};

// Online-softmax state of M query rows: q (already scaled) and acc [M][Dp], running max m and
// sum l [M], and lim [M]: row r sees keys [0, lim[r]).
struct RowBlock {
  float* q;
  float* acc;
  float* m;
  float* l;
  const int64_t* lim;
  int64_t M;
  void reset(int64_t Dp) const {
    std::fill(acc, acc + M * Dp, 0.0f);
    std::fill(m, m + M, -__builtin_inff());
    std::fill(l, l + M, 0.0f);
  }
};

inline __m256 ld8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 ld8(const uint16_t* p) { return bf16x8_to_f32(p); }

// Lane i = horizontal sum of vector i (8 sums in 7 shuffles/adds instead of 8 hsums).
inline __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  const __m256 t0 = _mm256_hadd_ps(a0, a1), t1 = _mm256_hadd_ps(a2, a3);
  const __m256 t2 = _mm256_hadd_ps(a4, a5), t3 = _mm256_hadd_ps(a6, a7);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  // u0 = [s0 s1 s2 s3 | s0 s1 s2 s3] partial halves, u1 likewise for s4..s7.
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// 8 dot products of q with k[0..7] over Dp elements (Dp a multiple of 8), as one vector.
// K rows are f32 or bf16 (converted in registers).
template <class E>
inline __m256 dot8(const float* q, const E* const* k, int64_t Dp) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const E *k0 = k[0], *k1 = k[1], *k2 = k[2], *k3 = k[3], *k4 = k[4], *k5 = k[5], *k6 = k[6], *k7 = k[7];
  for (int64_t d = 0; d < Dp; d += 8) {
    const __m256 x = _mm256_loadu_ps(q + d);
    a0 = _mm256_fmadd_ps(x, ld8(k0 + d), a0);
    a1 = _mm256_fmadd_ps(x, ld8(k1 + d), a1);
    a2 = _mm256_fmadd_ps(x, ld8(k2 + d), a2);
    a3 = _mm256_fmadd_ps(x, ld8(k3 + d), a3);
    a4 = _mm256_fmadd_ps(x, ld8(k4 + d), a4);
    a5 = _mm256_fmadd_ps(x, ld8(k5 + d), a5);
    a6 = _mm256_fmadd_ps(x, ld8(k6 + d), a6);
    a7 = _mm256_fmadd_ps(x, ld8(k7 + d), a7);
  }
  return reduce8(a0, a1, a2, a3, a4, a5, a6, a7);
}

template <class E>
inline float dot1(const float* q, const E* k, int64_t Dp) {
  __m256 a = _mm256_setzero_ps();
  for (int64_t d = 0; d < Dp; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), ld8(k + d), a);
  return hsum(a);
}

// acc[d0 .. d0 + 8·NV) = alpha · acc + Σ_j p[j] · v[j][d0 ..], accumulators in registers.
template <int NV, class E>
inline void pv_block(float* acc, float alpha, const float* p, const E* const* v, int64_t n, int64_t d0) {
  __m256 a[NV];
  const __m256 va = _mm256_set1_ps(alpha);
  for (int i = 0; i < NV; i++) a[i] = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d0 + 8 * i));
  for (int64_t j = 0; j < n; j++) {
    const __m256 pj = _mm256_set1_ps(p[j]);
    const E* vj = v[j] + d0;
    for (int i = 0; i < NV; i++) a[i] = _mm256_fmadd_ps(pj, ld8(vj + 8 * i), a[i]);
  }
  for (int i = 0; i < NV; i++) _mm256_storeu_ps(acc + d0 + 8 * i, a[i]);
}

template <class E>
inline void pv_update(float* acc, float alpha, const float* p, const E* const* v, int64_t n, int64_t Dp) {
  int64_t d0 = 0;
  for (; d0 + 64 <= Dp; d0 += 64) pv_block<8>(acc, alpha, p, v, n, d0);
  switch ((Dp - d0) / 8) {
    case 7: pv_block<7>(acc, alpha, p, v, n, d0); break;
    case 6: pv_block<6>(acc, alpha, p, v, n, d0); break;
    case 5: pv_block<5>(acc, alpha, p, v, n, d0); break;
    case 4: pv_block<4>(acc, alpha, p, v, n, d0); break;
    case 3: pv_block<3>(acc, alpha, p, v, n, d0); break;
    case 2: pv_block<2>(acc, alpha, p, v, n, d0); break;
    case 1: pv_block<1>(acc, alpha, p, v, n, d0); break;
    default: break;
  }
}

// Scores of R query rows against keys [0, n) of a tile: s[r][j] = q_r · k_j. Each K vector is
// loaded (and converted) once for all R rows; keys go in pairs.
template <int R, class E>
inline void scores_rows(const float* const* q, const E* const* kp, int64_t n, int64_t Dp, float* const* s) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    __m256 a0[R], a1[R];
    for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm256_setzero_ps();
    const E* k0 = kp[j];
    const E* k1 = kp[j + 1];
    for (int64_t d = 0; d < Dp; d += 8) {
      const __m256 x0 = ld8(k0 + d), x1 = ld8(k1 + d);
      for (int r = 0; r < R; r++) {
        const __m256 qv = _mm256_loadu_ps(q[r] + d);
        a0[r] = _mm256_fmadd_ps(qv, x0, a0[r]);
        a1[r] = _mm256_fmadd_ps(qv, x1, a1[r]);
      }
    }
    if constexpr (R == 4) {
      alignas(32) float t[8];
      _mm256_store_ps(t, reduce8(a0[0], a1[0], a0[1], a1[1], a0[2], a1[2], a0[3], a1[3]));
      for (int r = 0; r < 4; r++) {
        s[r][j] = t[2 * r];
        s[r][j + 1] = t[2 * r + 1];
      }
    } else {
      for (int r = 0; r < R; r++) {
        s[r][j] = hsum(a0[r]);
        s[r][j + 1] = hsum(a1[r]);
      }
    }
  }
  if (j < n) {
    __m256 a0[R];
    for (int r = 0; r < R; r++) a0[r] = _mm256_setzero_ps();
    const E* k0 = kp[j];
    for (int64_t d = 0; d < Dp; d += 8) {
      const __m256 x0 = ld8(k0 + d);
      for (int r = 0; r < R; r++) a0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q[r] + d), x0, a0[r]);
    }
    for (int r = 0; r < R; r++) s[r][j] = hsum(a0[r]);
  }
}

// acc_r = alpha_r · acc_r + Σ_j p_r[j] · v_j for R rows; each V vector is loaded once for all
// rows, accumulators for 16 columns at a time stay in registers.
template <int R, class E>
inline void pv_rows(float* const* acc, const float* alpha, const float* const* p, const E* const* vp,
                    int64_t n, int64_t Dp) {
  int64_t d0 = 0;
  for (; d0 + 16 <= Dp; d0 += 16) {
    __m256 a0[R], a1[R];
    for (int r = 0; r < R; r++) {
      const __m256 al = _mm256_set1_ps(alpha[r]);
      a0[r] = _mm256_mul_ps(al, _mm256_loadu_ps(acc[r] + d0));
      a1[r] = _mm256_mul_ps(al, _mm256_loadu_ps(acc[r] + d0 + 8));
    }
    for (int64_t j = 0; j < n; j++) {
      const __m256 v0 = ld8(vp[j] + d0), v1 = ld8(vp[j] + d0 + 8);
      for (int r = 0; r < R; r++) {
        const __m256 pj = _mm256_broadcast_ss(p[r] + j);
        a0[r] = _mm256_fmadd_ps(pj, v0, a0[r]);
        a1[r] = _mm256_fmadd_ps(pj, v1, a1[r]);
      }
    }
    for (int r = 0; r < R; r++) {
      _mm256_storeu_ps(acc[r] + d0, a0[r]);
      _mm256_storeu_ps(acc[r] + d0 + 8, a1[r]);
    }
  }
  if (d0 < Dp) {  // 8 columns left
    __m256 a0[R];
    for (int r = 0; r < R; r++) a0[r] = _mm256_mul_ps(_mm256_set1_ps(alpha[r]), _mm256_loadu_ps(acc[r] + d0));
    for (int64_t j = 0; j < n; j++) {
      const __m256 v0 = ld8(vp[j] + d0);
      for (int r = 0; r < R; r++) a0[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p[r] + j), v0, a0[r]);
    }
    for (int r = 0; r < R; r++) _mm256_storeu_ps(acc[r] + d0, a0[r]);
  }
}

// Online-softmax step of R rows (starting at row r0 of rb) over a tile of n keys at j0.
template <int R, class E>
void attend_group(const RowBlock& rb, int64_t r0, const E* const* kp, const E* const* vp, int64_t j0,
                  int64_t n, int64_t Dp, float* sbuf) {
  const float* q[R];
  float* acc[R];
  float* s[R];
  float alpha[R];
  int64_t nr[R];
  int64_t nmax = 0;
  for (int r = 0; r < R; r++) {
    q[r] = rb.q + (r0 + r) * Dp;
    acc[r] = rb.acc + (r0 + r) * Dp;
    s[r] = sbuf + r * (kKeyTile + 8);
    nr[r] = std::max<int64_t>(0, std::min(n, rb.lim[r0 + r] - j0));
    nmax = std::max(nmax, nr[r]);
  }
  if (nmax == 0) return;
  scores_rows<R>(q, kp, nmax, Dp, s);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int r = 0; r < R; r++) {
    const int64_t m = nr[r];
    if (m == 0) {  // this row sees none of the tile: p = 0, acc unchanged
      alpha[r] = 1.0f;
      std::fill(s[r], s[r] + nmax, 0.0f);
      continue;
    }
    float mc = -__builtin_inff();
    for (int64_t j = 0; j < m; j++) mc = std::max(mc, s[r][j]);
    const float mold = rb.m[r0 + r];
    const float mnew = std::max(mold, mc);
    alpha[r] = mold == -__builtin_inff() ? 0.0f : exp1(mold - mnew);
    const __m256 vm = _mm256_set1_ps(mnew);
    __m256 vs = _mm256_setzero_ps();
    for (int64_t j = 0; j < nmax; j += 8) {
      // s has 8 spare floats past the tile; lanes at or past this row's m are zeroed.
      __m256 pv = exp8(_mm256_sub_ps(_mm256_loadu_ps(s[r] + j), vm));
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(m - j)), lane));
      pv = _mm256_and_ps(pv, keep);
      _mm256_storeu_ps(s[r] + j, pv);
      vs = _mm256_add_ps(vs, pv);
    }
    rb.l[r0 + r] = std::fma(rb.l[r0 + r], alpha[r], hsum(vs));
    rb.m[r0 + r] = mnew;
  }
  pv_rows<R>(acc, alpha, s, vp, nmax, Dp);
}

// One tile of n keys (rows kp/vp, Dp elements each) for every row of rb, four rows at a time.
template <class E>
void attend_tile(const RowBlock& rb, const E* const* kp, const E* const* vp, int64_t j0, int64_t n,
                 int64_t Dp, float* s) {
  int64_t r0 = 0;
  for (; r0 + 4 <= rb.M; r0 += 4) attend_group<4>(rb, r0, kp, vp, j0, n, Dp, s);
  switch (rb.M - r0) {
    case 3: attend_group<3>(rb, r0, kp, vp, j0, n, Dp, s); break;
    case 2: attend_group<2>(rb, r0, kp, vp, j0, n, Dp, s); break;
    case 1: attend_group<1>(rb, r0, kp, vp, j0, n, Dp, s); break;
    default: break;
  }
}

// Advances the online softmax of the rows of rb over keys [ka, kb) of kv (each row stopping at
// its own lim), in tiles of kKeyTile keys. K/V rows are read in place (bf16 converted in
// registers) or first gathered into zero-padded f32 scratch (see in_place).
void attend_rows(TileScratch& sc, const RowBlock& rb, const KvRows& kv, int64_t ka, int64_t kb,
                 int32_t dtype, int64_t D) {
  const int64_t Dp = pad8(D);
  // Few rows (decode): read the cache rows in place. Many rows (prefill): copy the tile into
  // contiguous scratch once; the rows sit Hkv·D apart, and power-of-two strides alias in L1.
  const bool in_place = D == Dp && rb.M <= 8;
  const int64_t row_bytes = D * int64_t(act_size(dtype));
  int64_t maxlim = 0;
  for (int64_t r = 0; r < rb.M; r++) maxlim = std::max(maxlim, rb.lim[r]);
  maxlim = std::min(maxlim, kb);
  float* s = sc.s.data();
  for (int64_t j0 = ka; j0 < maxlim; j0 += kKeyTile) {
    const int64_t n = std::min(kKeyTile, maxlim - j0);
    // Prefetch the next tile's rows: the cache is read row by row at a stride of Hkv·D, so
    // without this the loads below wait on memory latency rather than bandwidth.
    const int64_t nn = std::min(kKeyTile, maxlim - j0 - n);
    for (int64_t j = 0; j < nn; j++) {
      const int64_t off = kv.offset(j0 + n + j);
      const char* kr = static_cast<const char*>(elem(kv.k, dtype, off));
      const char* vr = static_cast<const char*>(elem(kv.v, dtype, off));
      for (int64_t b = 0; b < row_bytes; b += 64) {
        _mm_prefetch(kr + b, _MM_HINT_T1);
        _mm_prefetch(vr + b, _MM_HINT_T1);
      }
    }
    if (in_place && dtype == QL_BF16) {
      for (int64_t j = 0; j < n; j++) {
        const int64_t off = kv.offset(j0 + j);
        sc.kh[size_t(j)] = static_cast<const uint16_t*>(kv.k) + off;
        sc.vh[size_t(j)] = static_cast<const uint16_t*>(kv.v) + off;
      }
      attend_tile(rb, sc.kh.data(), sc.vh.data(), j0, n, Dp, s);
      continue;
    }
    if (!in_place) sc.ensure_gather();
    for (int64_t j = 0; j < n; j++) {
      const int64_t off = kv.offset(j0 + j);
      if (in_place) {
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
    attend_tile(rb, sc.kp.data(), sc.vp.data(), j0, n, Dp, s);
  }
}

// One sequence of a forward call: its query rows [q0, q0 + q_len) of q/out are the last q_len
// of its ctx_len keys; keys live in the paged cache (table) or at packed rows kv0 + j.
struct SeqDesc {
  int64_t q0, q_len, ctx_len, kv0;
  const int32_t* table;
};

// A forward work item: kv heads [ga, gb) of sequence s, query rows [i0, i1), keys [k0, k1).
// Prefill style: one kv head, a tile of query rows, all its keys. Decode style: all query rows,
// a range of kv heads, a chunk of keys; part >= 0 when the sequence's keys are split over several
// items whose partial softmax states are merged afterwards.
struct FwdItem {
  bool decode;
  int64_t s, ga, gb, i0, i1, k0, k1, part;
  double cost;
};

constexpr int64_t kDecodeMaxQ = 4;     // sequences with at most this many queries go decode style
constexpr int64_t kDecodeTile = 16;    // keys per step of a decode item (all heads per step)
constexpr int64_t kSplitKeys = 512;    // keys per split of a decode sequence (multiple of kDecodeTile)

void run_attention(ql_ctx* ctx, const std::vector<SeqDesc>& seqs, void* out, float* lse,
                   const void* q, const void* k, const void* v, int64_t block_size, int64_t H,
                   int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype) {
  const int64_t G = H / Hkv, Dp = pad8(D);
  const int64_t rows_per_item = std::max<int64_t>(1, kRowTarget / G);
  const int nthreads = threads(ctx);
  std::vector<FwdItem> items;
  std::vector<int64_t> part_off;  // float offset of each partial's acc; m and l follow per row
  int64_t part_floats = 0, max_rows = 1;
  // Too few items for the threads: decode items also split their kv heads (heads are
  // independent, so this changes no result bit).
  int64_t n_est = 0;
  for (const SeqDesc& sq : seqs)
    n_est += sq.q_len == 0 ? 0
             : sq.q_len <= kDecodeMaxQ ? (sq.ctx_len + kSplitKeys - 1) / kSplitKeys
                                       : Hkv * ((sq.q_len + rows_per_item - 1) / rows_per_item);
  const int64_t hsplit = std::min<int64_t>(Hkv, std::max<int64_t>(1, (2 * nthreads + n_est - 1) / std::max<int64_t>(1, n_est)));
  for (int64_t s = 0; s < int64_t(seqs.size()); s++) {
    const SeqDesc& sq = seqs[size_t(s)];
    if (sq.q_len == 0) continue;
    if (sq.q_len <= kDecodeMaxQ) {
      // Long sequences split at fixed key boundaries (not depending on the batch, so a sequence
      // gives bit-identical results alone or batched); the partial states merge afterwards.
      const int64_t nsplit = (sq.ctx_len + kSplitKeys - 1) / kSplitKeys;
      for (int64_t hs = 0; hs < hsplit; hs++) {
        const int64_t ga = Hkv * hs / hsplit, gb = Hkv * (hs + 1) / hsplit;
        if (ga == gb) continue;
        const int64_t rows = sq.q_len * G * (gb - ga);
        max_rows = std::max(max_rows, rows);
        for (int64_t k0 = 0; k0 < sq.ctx_len; k0 += kSplitKeys) {
          int64_t part = -1;
          if (nsplit > 1) {
            part = int64_t(part_off.size());
            part_off.push_back(part_floats);
            part_floats += rows * (Dp + 2);
          }
          const int64_t k1 = std::min(sq.ctx_len, k0 + kSplitKeys);
          items.push_back({true, s, ga, gb, 0, sq.q_len, k0, k1, part, double(rows) * double(k1 - k0)});
        }
      }
    } else {
      max_rows = std::max(max_rows, rows_per_item * G);
      const int64_t past = sq.ctx_len - sq.q_len;
      for (int64_t i0 = 0; i0 < sq.q_len; i0 += rows_per_item) {
        const int64_t i1 = std::min(sq.q_len, i0 + rows_per_item);
        for (int64_t g = 0; g < Hkv; g++)
          items.push_back({false, s, g, g + 1, i0, i1, 0, past + i1, -1, double((i1 - i0) * G) * double(past + i1)});
      }
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const FwdItem& x, const FwdItem& y) { return x.cost > y.cost; });
  std::vector<float> parts(static_cast<size_t>(part_floats));
  const int64_t nitems = int64_t(items.size());
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(nthreads, nitems)));
  const int64_t kv_row = Hkv * D;
#pragma omp parallel num_threads(nt)
  {
    TileScratch sc(Dp);
    std::vector<float> qb(size_t(max_rows * Dp), 0.0f), acc(static_cast<size_t>(max_rows * Dp)), m(static_cast<size_t>(max_rows)),
        l(static_cast<size_t>(max_rows)), row(static_cast<size_t>(Dp));
    std::vector<int64_t> lim(static_cast<size_t>(max_rows));
    std::vector<int64_t> row_tok(static_cast<size_t>(max_rows)), row_head(static_cast<size_t>(max_rows));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
      const FwdItem& w = items[size_t(it)];
      const SeqDesc& sq = seqs[size_t(w.s)];
      const int64_t past = sq.ctx_len - sq.q_len;
      // Rows ordered (kv head, query row, head within group) so each kv head's rows are contiguous.
      const int64_t nq = w.i1 - w.i0;
      const int64_t g0 = w.ga;
      const int64_t M = (w.gb - w.ga) * nq * G;
      for (int64_t r = 0; r < M; r++) {
        const int64_t g = g0 + r / (nq * G), i = w.i0 + (r / G) % nq, h = g * G + r % G;
        row_tok[size_t(r)] = sq.q0 + i;
        row_head[size_t(r)] = h;
        float* qr = qb.data() + r * Dp;
        load_row(qr, q, dtype, ((sq.q0 + i) * H + h) * D, D);
        scal_f32(qr, softmax_scale, D);
        lim[size_t(r)] = past + i + 1;
      }
      auto block = [&](int64_t g) {
        const int64_t r0 = (g - g0) * nq * G;
        return RowBlock{qb.data() + r0 * Dp, acc.data() + r0 * Dp, m.data() + r0, l.data() + r0, lim.data() + r0, nq * G};
      };
      auto kv_of = [&](int64_t g) {
        return KvRows{k, v, sq.table, block_size, sq.kv0, kv_row, g * D};
      };
      RowBlock all{qb.data(), acc.data(), m.data(), l.data(), lim.data(), M};
      all.reset(Dp);
      if (!w.decode) {
        attend_rows(sc, block(w.ga), kv_of(w.ga), 0, w.k1, dtype, D);
      } else {
        // All heads per key step: the cache rows (Hkv·D contiguous per token) stream through.
        // While head g of this step computes, head g's rows of the next step are prefetched, so
        // the prefetches spread over the compute instead of stalling in one burst.
        const int64_t line_per_head = (D * int64_t(act_size(dtype)) + 63) / 64;
        for (int64_t t0 = w.k0; t0 < w.k1; t0 += kDecodeTile) {
          const int64_t t1 = std::min(w.k1, t0 + kDecodeTile);
          const int64_t tn = std::min(w.k1, t1 + kDecodeTile);
          for (int64_t g = w.ga; g < w.gb; g++) {
            const KvRows kvg = kv_of(g);
            for (int64_t j = t1; j < tn; j++) {
              const char* kr = static_cast<const char*>(elem(k, dtype, kvg.offset(j)));
              const char* vr = static_cast<const char*>(elem(v, dtype, kvg.offset(j)));
              for (int64_t b = 0; b < line_per_head; b++) {
                _mm_prefetch(kr + 64 * b, _MM_HINT_T1);
                _mm_prefetch(vr + 64 * b, _MM_HINT_T1);
              }
            }
            attend_rows(sc, block(g), kvg, t0, t1, dtype, D);
          }
        }
      }
      if (w.part >= 0) {
        float* pp = parts.data() + part_off[size_t(w.part)];
        memcpy(pp, acc.data(), size_t(M * Dp) * 4);
        memcpy(pp + M * Dp, m.data(), size_t(M) * 4);
        memcpy(pp + M * Dp + M, l.data(), size_t(M) * 4);
        continue;
      }
      for (int64_t r = 0; r < M; r++) {
        const float inv = 1.0f / l[size_t(r)];
        const float* ar = acc.data() + r * Dp;
        for (int64_t d = 0; d < D; d++) row[size_t(d)] = ar[d] * inv;
        const int64_t t = row_tok[size_t(r)], h = row_head[size_t(r)];
        store_row(out, dtype, (t * H + h) * D, row.data(), D);
        if (lse) lse[t * H + h] = m[size_t(r)] + std::log(l[size_t(r)]);
      }
    }
  }
  if (part_off.empty()) return;
  // Merge the partial states of split sequences: the parts of one (sequence, head range) have
  // consecutive indices.
  struct Merge {
    int64_t s, ga, gb, first_part, nparts;
  };
  std::vector<Merge> merges;
  {
    std::vector<FwdItem> split;
    for (const FwdItem& w : items)
      if (w.part >= 0) split.push_back(w);
    std::sort(split.begin(), split.end(), [](const FwdItem& x, const FwdItem& y) { return x.part < y.part; });
    for (const FwdItem& w : split) {
      if (merges.empty() || merges.back().s != w.s || merges.back().ga != w.ga)
        merges.push_back({w.s, w.ga, w.gb, w.part, 0});
      merges.back().nparts++;
    }
  }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t mi = 0; mi < int64_t(merges.size()); mi++) {
    const Merge& mg = merges[size_t(mi)];
    const SeqDesc& sq = seqs[size_t(mg.s)];
    const int64_t nq = sq.q_len, M = (mg.gb - mg.ga) * nq * G;
    std::vector<float> accum(static_cast<size_t>(Dp)), row(static_cast<size_t>(Dp));
    for (int64_t r = 0; r < M; r++) {
      float mmax = -__builtin_inff();
      for (int64_t p = 0; p < mg.nparts; p++) {
        const float* pp = parts.data() + part_off[size_t(mg.first_part + p)];
        mmax = std::max(mmax, pp[M * Dp + r]);
      }
      std::fill(accum.begin(), accum.end(), 0.0f);
      float lsum = 0.0f;
      for (int64_t p = 0; p < mg.nparts; p++) {
        const float* pp = parts.data() + part_off[size_t(mg.first_part + p)];
        const float mp = pp[M * Dp + r];
        if (mp == -__builtin_inff()) continue;
        const float wgt = exp1(mp - mmax);
        lsum = std::fma(pp[M * Dp + M + r], wgt, lsum);
        axpy_f32(accum.data(), wgt, pp + r * Dp, Dp);
      }
      const int64_t g = mg.ga + r / (nq * G), i = (r / G) % nq, h = g * G + r % G;
      const float inv = 1.0f / lsum;
      for (int64_t d = 0; d < D; d++) row[size_t(d)] = accum[size_t(d)] * inv;
      store_row(out, dtype, ((sq.q0 + i) * H + h) * D, row.data(), D);
      if (lse) lse[(sq.q0 + i) * H + h] = mmax + std::log(lsum);
    }
  }
}

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
  std::vector<SeqDesc> seqs(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; s++)
    seqs[size_t(s)] = {host_q_start[s], host_q_start[s + 1] - host_q_start[s], host_ctx_lens[s], 0,
                       host_block_tables + s * max_blocks};
  run_attention(ctx, seqs, out, nullptr, q, k_cache, v_cache, block_size, H, Hkv, D, softmax_scale, dtype);
  return QL_OK;
}

ql_status attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q, const void* k,
                            const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                            int64_t H, int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype) {
  std::vector<SeqDesc> seqs(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; s++) {
    const int64_t len = host_cu_seqlens[s + 1] - host_cu_seqlens[s];
    seqs[size_t(s)] = {host_cu_seqlens[s], len, len, host_cu_seqlens[s], nullptr};
  }
  run_attention(ctx, seqs, out, lse, q, k, v, 1, H, Hkv, D, softmax_scale, dtype);
  return QL_OK;
}

namespace {

// dst_j += Σ_r coef[r][j] · src_r for keys j < n (dst rows Dp apart): each dst vector is loaded
// and stored once for all R rows, the src columns stay in registers.
template <int R>
inline void rows_to_keys(float* dst, const float* const* coef, const float* const* src, int64_t n, int64_t Dp) {
  for (int64_t d0 = 0; d0 < Dp; d0 += 8) {
    __m256 x[R];
    for (int r = 0; r < R; r++) x[r] = _mm256_loadu_ps(src[r] + d0);
    for (int64_t j = 0; j < n; j++) {
      float* dj = dst + j * Dp + d0;
      __m256 a = _mm256_loadu_ps(dj);
      for (int r = 0; r < R; r++) a = _mm256_fmadd_ps(_mm256_broadcast_ss(coef[r] + j), x[r], a);
      _mm256_storeu_ps(dj, a);
    }
  }
}

struct BwdTile {
  const float* const* q;    // R query rows (f32, Dp)
  const float* const* dO;   // R rows of dout
  const float* lse;         // per row
  const float* delta;       // per row: Σ dO ⊙ O
  const int64_t* lim;       // per row: keys [0, lim) visible
  float* const* dq;         // R rows of the dq accumulator
};

// One (R query rows) × (key tile [j0, j0 + n)) block of the backward pass.
template <int R>
void backward_group(const BwdTile& t, const float* const* kp, const float* const* vp, float* dkf, float* dvf,
                    int64_t j0, int64_t n, int64_t Dp, float scale, float* sbuf) {
  float* pr[R];
  float* dsr[R];
  int64_t nr[R];
  int64_t nmax = 0;
  for (int r = 0; r < R; r++) {
    pr[r] = sbuf + r * (kBwdKeyTile + 8);
    dsr[r] = sbuf + (R + r) * (kBwdKeyTile + 8);
    nr[r] = std::max<int64_t>(0, std::min(n, t.lim[r] - j0));
    nmax = std::max(nmax, nr[r]);
  }
  if (nmax == 0) return;
  scores_rows<R>(t.q, kp, nmax, Dp, pr);
  scores_rows<R>(t.dO, vp, nmax, Dp, dsr);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int r = 0; r < R; r++) {
    const __m256 vl = _mm256_set1_ps(t.lse[r]), vd = _mm256_set1_ps(t.delta[r]);
    for (int64_t j = 0; j < nmax; j += 8) {
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(nr[r] - j)), lane));
      const __m256 pv = _mm256_and_ps(keep, exp8(_mm256_fmsub_ps(vscale, _mm256_loadu_ps(pr[r] + j), vl)));
      const __m256 ds = _mm256_mul_ps(_mm256_mul_ps(vscale, pv), _mm256_sub_ps(_mm256_loadu_ps(dsr[r] + j), vd));
      _mm256_storeu_ps(pr[r] + j, pv);
      _mm256_storeu_ps(dsr[r] + j, ds);
    }
  }
  rows_to_keys<R>(dvf + j0 * Dp, pr, t.dO, nmax, Dp);
  rows_to_keys<R>(dkf + j0 * Dp, dsr, t.q, nmax, Dp);
  float alpha[R];
  for (int r = 0; r < R; r++) alpha[r] = 1.0f;
  pv_rows<R>(t.dq, alpha, dsr, kp, nmax, Dp);
}

}  // namespace

// With P = exp(scale · Q Kᵀ − lse) (causal), Dᵢ = Σ dOᵢ ⊙ Oᵢ:
//   dV = Pᵀ dO,  dS = P ⊙ (dO Vᵀ − D),  dQ = scale · dS K,  dK = scale · dSᵀ Q.
// Work item (sequence, kv head): it owns those dK/dV rows and the dQ rows of its query heads.
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
    std::vector<const float*> kptr, vptr;
    std::vector<float> qf(static_cast<size_t>(MQ * Dp)), dof(static_cast<size_t>(MQ * Dp)), dqf(static_cast<size_t>(MQ * Dp));
    std::vector<float> lrow(static_cast<size_t>(MQ)), drow(static_cast<size_t>(MQ)), orow(static_cast<size_t>(Dp));
    std::vector<float> sbuf(static_cast<size_t>(8 * (kBwdKeyTile + 8)));
    std::vector<int64_t> lim(static_cast<size_t>(MQ));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
      const Item& w = items[size_t(it)];
      const int64_t t0 = host_cu_seqlens[w.s], L = w.len;
      kf.assign(size_t(L * Dp), 0.0f);
      vf.assign(size_t(L * Dp), 0.0f);
      dkf.assign(size_t(L * Dp), 0.0f);
      dvf.assign(size_t(L * Dp), 0.0f);
      kptr.resize(size_t(L));
      vptr.resize(size_t(L));
      for (int64_t j = 0; j < L; j++) {
        load_row(kf.data() + j * Dp, k, dtype, ((t0 + j) * Hkv + w.g) * D, D);
        load_row(vf.data() + j * Dp, v, dtype, ((t0 + j) * Hkv + w.g) * D, D);
        kptr[size_t(j)] = kf.data() + j * Dp;
        vptr[size_t(j)] = vf.data() + j * Dp;
      }
      std::fill(qf.begin(), qf.end(), 0.0f);
      std::fill(dof.begin(), dof.end(), 0.0f);
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
          lim[size_t(r)] = i + 1;
        }
        std::fill(dqf.begin(), dqf.begin() + M * Dp, 0.0f);
        for (int64_t j0 = 0; j0 < i1; j0 += kBwdKeyTile) {
          const int64_t n = std::min(i1, j0 + kBwdKeyTile) - j0;
          int64_t r0 = 0;
          auto group = [&](auto R_) {
            constexpr int R = decltype(R_)::value;
            const float* qp[R];
            const float* dp[R];
            float* dqp[R];
            for (int r = 0; r < R; r++) {
              qp[r] = qf.data() + (r0 + r) * Dp;
              dp[r] = dof.data() + (r0 + r) * Dp;
              dqp[r] = dqf.data() + (r0 + r) * Dp;
            }
            const BwdTile bt{qp, dp, lrow.data() + r0, drow.data() + r0, lim.data() + r0, dqp};
            backward_group<R>(bt, kptr.data() + j0, vptr.data() + j0, dkf.data(), dvf.data(), j0, n, Dp,
                              softmax_scale, sbuf.data());
          };
          for (; r0 + 4 <= M; r0 += 4) group(std::integral_constant<int, 4>());
          switch (M - r0) {
            case 3: group(std::integral_constant<int, 3>()); break;
            case 2: group(std::integral_constant<int, 2>()); break;
            case 1: group(std::integral_constant<int, 1>()); break;
            default: break;
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
