// ops.cpp — argument checks for the transformer ops, LoRA, optimizers and sampling helpers.
#include <cmath>
#include <memory>

#include "api/checks.h"

namespace {

// Checks a host prefix-sum array: a[0] = 0, nondecreasing, a[S] = total. It reads a[0..S]: the
// caller bounds S (1 <= S <= a limit) before.
ql_status check_prefix(const char* fn, const char* name, const int32_t* a, int64_t S, int64_t total) {
  QL_CHECK(a[0] == 0, "%s: %s[0] must be 0 (got %d)", fn, name, a[0]);
  for (int64_t s = 0; s < S; s++)
    QL_CHECK(a[s + 1] >= a[s], "%s: %s must be nondecreasing (%s[%lld] = %d > %s[%lld] = %d)", fn,
             name, name, (long long)s, a[s], name, (long long)(s + 1), a[s + 1]);
  QL_CHECK(a[S] == total, "%s: %s[S] = %d must equal T = %lld", fn, name, a[S], (long long)total);
  return QL_OK;
}

}  // namespace

#define QL_CHECK_PREFIX(a, S, total)                                 \
  do {                                                                \
    ql_status _st = check_prefix(__func__, #a, (a), (S), (total));    \
    if (_st != QL_OK) return _st;                                     \
  } while (0)

#define QL_CHECK_HEADS(H, Hkv, D)                                                             \
  do {                                                                                        \
    QL_CHECK_POS(H);                                                                          \
    QL_CHECK_POS(Hkv);                                                                        \
    QL_CHECK(D > 0 && D <= 512, "%s: head dim D must be in [1, 512] (got %lld)", __func__, (long long)(D)); \
    QL_CHECK((H) % (Hkv) == 0, "%s: H (%lld) must be a multiple of Hkv (%lld)", __func__,    \
             (long long)(H), (long long)(Hkv));                                               \
  } while (0)

extern "C" {

QL_API ql_status ql_embedding_forward(ql_ctx* ctx, void* out, const int32_t* ids,
                                      const void* table, int64_t T, int64_t V, int64_t C,
                                      int32_t dtype, int32_t table_dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(V);
  QL_CHECK_POS(C);
  QL_CHECK_NUMEL(T, C);
  QL_CHECK_NUMEL(V, C);
  QL_CHECK(V <= INT32_MAX, "ql_embedding_forward: V too large");
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(ids);
  QL_CHECK_PTR(table);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_CHECK_ACT_DTYPE(table_dtype);
  QL_GUARD(return QL_CALL(ctx, embedding_forward, ctx, out, ids, table, T, V, C, dtype, table_dtype);)
}

QL_API ql_status ql_embedding_backward(ql_ctx* ctx, float* dtable, const void* dout,
                                       const int32_t* ids, int64_t T, int64_t V, int64_t C,
                                       int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(V);
  QL_CHECK_POS(C);
  QL_CHECK_NUMEL(T, C);
  QL_CHECK_NUMEL(V, C);
  QL_CHECK(V <= INT32_MAX, "ql_embedding_backward: V too large");
  QL_CHECK_PTR(dtable);
  QL_CHECK_PTR(dout);
  QL_CHECK_PTR(ids);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, embedding_backward, ctx, dtable, dout, ids, T, V, C, dtype);)
}

QL_API ql_status ql_rmsnorm_forward(ql_ctx* ctx, void* out, float* rstd, const void* x,
                                    const float* weight, int64_t T, int64_t C, float eps,
                                    int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(C);
  QL_CHECK_NUMEL(T, C);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(weight);
  QL_CHECK(eps > 0 && std::isfinite(eps), "ql_rmsnorm_forward: eps must be finite and > 0");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, rmsnorm_forward, ctx, out, rstd, x, weight, T, C, eps, dtype);)
}

QL_API ql_status ql_rmsnorm_backward(ql_ctx* ctx, void* dx, float* dweight, const void* dout,
                                     const void* x, const float* weight, const float* rstd,
                                     int64_t T, int64_t C, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(C);
  QL_CHECK_NUMEL(T, C);
  QL_CHECK_PTR(dx);
  QL_CHECK_PTR(dout);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(weight);
  QL_CHECK_PTR(rstd);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, rmsnorm_backward, ctx, dx, dweight, dout, x, weight, rstd, T, C, dtype);)
}

QL_API ql_status ql_rope_forward(ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
                                 const float* inv_freq, int64_t T, int64_t Hn, int64_t D,
                                 int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(Hn);
  QL_CHECK(D > 0 && D % 2 == 0 && D <= 512, "ql_rope_forward: D must be even, in [2, 512] (got %lld)", (long long)D);
  QL_CHECK_NUMEL(T, Hn, D);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(positions);
  QL_CHECK_PTR(inv_freq);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, rope_forward, ctx, out, x, positions, inv_freq, T, Hn, D, dtype);)
}

QL_API ql_status ql_rope_backward(ql_ctx* ctx, void* dx, const void* dout,
                                  const int32_t* positions, const float* inv_freq, int64_t T,
                                  int64_t Hn, int64_t D, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(Hn);
  QL_CHECK(D > 0 && D % 2 == 0 && D <= 512, "ql_rope_backward: D must be even, in [2, 512] (got %lld)", (long long)D);
  QL_CHECK_NUMEL(T, Hn, D);
  QL_CHECK_PTR(dx);
  QL_CHECK_PTR(dout);
  QL_CHECK_PTR(positions);
  QL_CHECK_PTR(inv_freq);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, rope_backward, ctx, dx, dout, positions, inv_freq, T, Hn, D, dtype);)
}

QL_API ql_status ql_kv_cache_write(ql_ctx* ctx, void* k_cache, void* v_cache, const void* k,
                                   const void* v, const int32_t* slots, int64_t T,
                                   int64_t num_blocks, int64_t block_size, int64_t Hkv,
                                   int64_t D, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(num_blocks);
  QL_CHECK_POS(block_size);
  QL_CHECK_HEADS(Hkv, Hkv, D);
  QL_CHECK_NUMEL(num_blocks, block_size, Hkv, D);
  QL_CHECK_NUMEL(T, Hkv, D);
  QL_CHECK_MUL(n_slots, num_blocks, block_size);
  QL_CHECK(n_slots <= INT32_MAX, "ql_kv_cache_write: too many slots for i32 slot ids");
  QL_CHECK_PTR(k_cache);
  QL_CHECK_PTR(v_cache);
  QL_CHECK_PTR(k);
  QL_CHECK_PTR(v);
  QL_CHECK_PTR(slots);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, kv_cache_write, ctx, k_cache, v_cache, k, v, slots, T, num_blocks,
                          block_size, Hkv, D, dtype);)
}

QL_API ql_status ql_attention_paged(ql_ctx* ctx, void* out, const void* q, const void* k_cache,
                                    const void* v_cache, const int32_t* host_block_tables,
                                    const int32_t* host_q_start, const int32_t* host_ctx_lens,
                                    int64_t S, int64_t max_blocks, int64_t num_blocks,
                                    int64_t block_size, int64_t H, int64_t Hkv, int64_t D,
                                    float softmax_scale, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(S);
  QL_CHECK(S <= ql::kMaxSequences, "ql_attention_paged: S = %lld sequences is more than %lld per call",
           (long long)S, (long long)ql::kMaxSequences);
  QL_CHECK_POS(max_blocks);
  QL_CHECK_POS(num_blocks);
  QL_CHECK_POS(block_size);
  QL_CHECK_HEADS(H, Hkv, D);
  QL_CHECK_NUMEL(S, max_blocks);
  QL_CHECK_NUMEL(num_blocks, block_size, Hkv, D);
  QL_CHECK_MUL(max_len, max_blocks, block_size);  // tokens a block-table row can map
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(q);
  QL_CHECK_PTR(k_cache);
  QL_CHECK_PTR(v_cache);
  QL_CHECK_PTR(host_block_tables);
  QL_CHECK_PTR(host_q_start);
  QL_CHECK_PTR(host_ctx_lens);
  QL_CHECK(softmax_scale > 0 && std::isfinite(softmax_scale), "ql_attention_paged: softmax_scale must be finite and > 0");
  QL_CHECK_ACT_DTYPE(dtype);
  const int64_t T = host_q_start[S];
  QL_CHECK(T > 0, "ql_attention_paged: no query rows (q_start[S] = %lld)", (long long)T);
  QL_CHECK_PREFIX(host_q_start, S, T);
  QL_CHECK_NUMEL(T, H, D);
  for (int64_t s = 0; s < S; s++) {
    const int64_t q_len = host_q_start[s + 1] - host_q_start[s];
    const int64_t len = host_ctx_lens[s];
    QL_CHECK(len >= q_len, "ql_attention_paged: sequence %lld has %lld queries but ctx_len %lld",
             (long long)s, (long long)q_len, (long long)len);
    QL_CHECK(len <= max_len, "ql_attention_paged: ctx_len %lld of sequence %lld exceeds max_blocks * block_size",
             (long long)len, (long long)s);
    const int64_t used = (len + block_size - 1) / block_size;
    for (int64_t j = 0; j < used; j++) {
      const int32_t blk = host_block_tables[s * max_blocks + j];
      QL_CHECK(blk >= 0 && blk < num_blocks, "ql_attention_paged: block_tables[%lld][%lld] = %d is outside [0, %lld)",
               (long long)s, (long long)j, blk, (long long)num_blocks);
    }
  }
  QL_GUARD(return QL_CALL(ctx, attention_paged, ctx, out, q, k_cache, v_cache, host_block_tables,
                          host_q_start, host_ctx_lens, S, max_blocks, num_blocks, block_size, H,
                          Hkv, D, softmax_scale, dtype);)
}

QL_API ql_status ql_attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q,
                                      const void* k, const void* v,
                                      const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                                      int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                                      int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(S);
  QL_CHECK_POS(T);
  QL_CHECK(T <= INT32_MAX, "%s: T = %lld does not fit the i32 cu_seqlens", __func__, (long long)T);
  // host_cu_seqlens has S + 1 entries: bound S before check_prefix reads them
  QL_CHECK(S <= T, "%s: S = %lld sequences is more than T = %lld rows", __func__, (long long)S, (long long)T);
  QL_CHECK_HEADS(H, Hkv, D);
  QL_CHECK_NUMEL(T, H, D);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(lse);
  QL_CHECK_PTR(q);
  QL_CHECK_PTR(k);
  QL_CHECK_PTR(v);
  QL_CHECK_PTR(host_cu_seqlens);
  QL_CHECK(softmax_scale > 0 && std::isfinite(softmax_scale), "ql_attention_forward: softmax_scale must be finite and > 0");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_CHECK_PREFIX(host_cu_seqlens, S, T);
  QL_GUARD(return QL_CALL(ctx, attention_forward, ctx, out, lse, q, k, v, host_cu_seqlens, S, T, H,
                          Hkv, D, softmax_scale, dtype);)
}

QL_API ql_status ql_attention_backward(ql_ctx* ctx, void* dq, void* dk, void* dv,
                                       const void* dout, const void* out, const float* lse,
                                       const void* q, const void* k, const void* v,
                                       const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                                       int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                                       int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(S);
  QL_CHECK_POS(T);
  QL_CHECK(T <= INT32_MAX, "%s: T = %lld does not fit the i32 cu_seqlens", __func__, (long long)T);
  // host_cu_seqlens has S + 1 entries: bound S before check_prefix reads them
  QL_CHECK(S <= T, "%s: S = %lld sequences is more than T = %lld rows", __func__, (long long)S, (long long)T);
  QL_CHECK_HEADS(H, Hkv, D);
  QL_CHECK_NUMEL(T, H, D);
  QL_CHECK_PTR(dq);
  QL_CHECK_PTR(dk);
  QL_CHECK_PTR(dv);
  QL_CHECK_PTR(dout);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(lse);
  QL_CHECK_PTR(q);
  QL_CHECK_PTR(k);
  QL_CHECK_PTR(v);
  QL_CHECK_PTR(host_cu_seqlens);
  QL_CHECK(softmax_scale > 0 && std::isfinite(softmax_scale), "ql_attention_backward: softmax_scale must be finite and > 0");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_CHECK_PREFIX(host_cu_seqlens, S, T);
  QL_GUARD(return QL_CALL(ctx, attention_backward, ctx, dq, dk, dv, dout, out, lse, q, k, v,
                          host_cu_seqlens, S, T, H, Hkv, D, softmax_scale, dtype);)
}

QL_API ql_status ql_silu_mul_forward(ql_ctx* ctx, void* out, const void* gate, const void* up,
                                     int64_t n, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(gate);
  QL_CHECK_PTR(up);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, silu_mul_forward, ctx, out, gate, up, n, dtype);)
}

QL_API ql_status ql_silu_mul_backward(ql_ctx* ctx, void* dgate, void* dup, const void* dout,
                                      const void* gate, const void* up, int64_t n,
                                      int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  QL_CHECK_PTR(dgate);
  QL_CHECK_PTR(dup);
  QL_CHECK_PTR(dout);
  QL_CHECK_PTR(gate);
  QL_CHECK_PTR(up);
  QL_CHECK(dgate != dup, "ql_silu_mul_backward: dgate and dup must not alias");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, silu_mul_backward, ctx, dgate, dup, dout, gate, up, n, dtype);)
}

QL_API ql_status ql_add(ql_ctx* ctx, void* out, const void* a, const void* b, float alpha,
                        int64_t n, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(a);
  QL_CHECK_PTR(b);
  QL_CHECK_FINITE(alpha);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, add, ctx, out, a, b, alpha, n, dtype);)
}

QL_API ql_status ql_cross_entropy(ql_ctx* ctx, float* losses, void* dlogits, const void* logits,
                                  const int32_t* targets, const float* weights, float grad_scale,
                                  int64_t T, int64_t V, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(V);
  QL_CHECK(V <= INT32_MAX, "ql_cross_entropy: V too large");
  QL_CHECK_NUMEL(T, V);
  QL_CHECK_PTR(losses);
  QL_CHECK_PTR(logits);
  QL_CHECK_PTR(targets);
  QL_CHECK_FINITE(grad_scale);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, cross_entropy, ctx, losses, dlogits, logits, targets, weights,
                          grad_scale, T, V, dtype);)
}

QL_API ql_status ql_lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
                                 const float* B, int64_t T, int64_t in, int64_t out, int64_t r,
                                 float scale, float dropout_p, uint64_t seed, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(in);
  QL_CHECK_POS(out);
  QL_CHECK(r >= 1 && r <= 1024, "ql_lora_forward: rank r must be in [1, 1024] (got %lld)", (long long)r);
  QL_CHECK_NUMEL(T, in);
  QL_CHECK_NUMEL(T, out);
  QL_CHECK_NUMEL(r, in);
  QL_CHECK_NUMEL(out, r);
  QL_CHECK_PTR(y);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(A);
  QL_CHECK_PTR(B);
  QL_CHECK_FINITE(scale);
  QL_CHECK(dropout_p >= 0 && dropout_p < 1, "ql_lora_forward: dropout_p must be in [0, 1)");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, lora_forward, ctx, y, xa, x, A, B, T, in, out, r, scale, dropout_p,
                          seed, dtype);)
}

QL_API ql_status ql_lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy,
                                  const void* x, const float* xa, const float* A, const float* B,
                                  int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                                  float dropout_p, uint64_t seed, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(in);
  QL_CHECK_POS(out);
  QL_CHECK(r >= 1 && r <= 1024, "ql_lora_backward: rank r must be in [1, 1024] (got %lld)", (long long)r);
  QL_CHECK_NUMEL(T, in);
  QL_CHECK_NUMEL(T, out);
  QL_CHECK_NUMEL(r, in);
  QL_CHECK_NUMEL(out, r);
  QL_CHECK_PTR(dA);
  QL_CHECK_PTR(dB);
  QL_CHECK_PTR(dy);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(xa);
  QL_CHECK_PTR(A);
  QL_CHECK_PTR(B);
  QL_CHECK_FINITE(scale);
  QL_CHECK(dropout_p >= 0 && dropout_p < 1, "ql_lora_backward: dropout_p must be in [0, 1)");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, lora_backward, ctx, dx, dA, dB, dy, x, xa, A, B, T, in, out, r, scale,
                          dropout_p, seed, dtype);)
}

QL_API ql_status ql_lora_multi_forward(ql_ctx* ctx, void* y, const void* x,
                                       const int32_t* host_row_adapter,
                                       const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs,
                                       const int32_t* host_ranks, const float* host_scales,
                                       int64_t n_adapters, int64_t T, int64_t in, int64_t out,
                                       int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(T);
  QL_CHECK_POS(in);
  QL_CHECK_POS(out);
  QL_CHECK_NONNEG(n_adapters);
  QL_CHECK(n_adapters <= 65536, "ql_lora_multi_forward: at most 65536 adapters per call");
  QL_CHECK_NUMEL(T, in);
  QL_CHECK_NUMEL(T, out);
  QL_CHECK_PTR(y);
  QL_CHECK_PTR(x);
  QL_CHECK_PTR(host_row_adapter);
  QL_CHECK_ACT_DTYPE(dtype);
  if (n_adapters > 0) {
    QL_CHECK_PTR(host_a_ptrs);
    QL_CHECK_PTR(host_b_ptrs);
    QL_CHECK_PTR(host_ranks);
    QL_CHECK_PTR(host_scales);
  }
  for (int64_t a = 0; a < n_adapters; a++) {
    QL_CHECK(host_ranks[a] >= 1 && host_ranks[a] <= 1024, "ql_lora_multi_forward: rank of adapter %lld is %d, not in [1, 1024]",
             (long long)a, host_ranks[a]);
    QL_CHECK(host_a_ptrs[a] != 0 && host_b_ptrs[a] != 0, "ql_lora_multi_forward: adapter %lld has a NULL A or B", (long long)a);
    QL_CHECK(std::isfinite(host_scales[a]), "ql_lora_multi_forward: scale of adapter %lld is not finite", (long long)a);
  }
  for (int64_t t = 0; t < T; t++)
    QL_CHECK(host_row_adapter[t] >= -1 && host_row_adapter[t] < n_adapters,
             "ql_lora_multi_forward: row %lld names adapter %d, not in [-1, %lld)", (long long)t,
             host_row_adapter[t], (long long)n_adapters);
  QL_GUARD(return QL_CALL(ctx, lora_multi_forward, ctx, y, x, host_row_adapter, host_a_ptrs,
                          host_b_ptrs, host_ranks, host_scales, n_adapters, T, in, out, dtype);)
}

QL_API ql_status ql_optimizer_create(ql_ctx* ctx, int32_t kind, uint64_t budget_bytes,
                                     const char* spill_dir, ql_optimizer** out) {
  QL_CHECK_PTR(out);
  *out = nullptr;
  QL_CHECK_CTX(ctx);
  QL_CHECK(kind == QL_OPT_ADAMW || kind == QL_OPT_PAGED_ADAMW || kind == QL_OPT_PAGED_ADAMW_8BIT,
           "ql_optimizer_create: kind must be ADAMW (0), PAGED_ADAMW (1) or PAGED_ADAMW_8BIT (2) (got %d)", kind);
  QL_GUARD({
    ql::HandleOwner<ql_optimizer> opt(ql::handle_new<ql_optimizer>());
    opt->ctx = ctx;
    opt->ctx_generation = ctx->generation;
    opt->kind = kind;
    opt->budget_bytes = budget_bytes;
    opt->spill_dir = spill_dir ? spill_dir : "";
    ql_status st = QL_CALL(ctx, optimizer_init, opt.get());
    if (st != QL_OK) return st;
    *out = opt.release();
    return QL_OK;
  })
}

QL_API ql_status ql_optimizer_add(ql_optimizer* opt, int64_t n, int64_t* out_index) {
  QL_CHECK_OPT(opt);
  QL_CHECK_PTR(out_index);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  ql_ctx* ctx = opt->ctx;
  QL_GUARD(return QL_CALL(ctx, optimizer_add, opt, n, out_index);)
}

// Checks index against the optimizer's tensors; on success *n is that tensor's size.
static ql_status check_opt_index(const char* fn, ql_optimizer* opt, int64_t index, int64_t* n) {
  ql_ctx* ctx = opt->ctx;
  int64_t count = 0;
  *n = 0;
  ql_status st = QL_CALL(ctx, optimizer_size, opt, index, n, &count);
  if (st != QL_OK) return st;
  QL_CHECK(index >= 0 && index < count, "%s: index %lld is not a registered tensor (have %lld)", fn,
           (long long)index, (long long)count);
  return QL_OK;
}

QL_API ql_status ql_optimizer_step(ql_optimizer* opt, int64_t index, float* param,
                                   const float* grad, float lr, float beta1, float beta2,
                                   float eps, float weight_decay, float grad_scale, int64_t step) {
  QL_CHECK_OPT(opt);
  QL_CHECK_PTR(param);
  QL_CHECK_PTR(grad);
  QL_CHECK(std::isfinite(lr) && lr >= 0, "ql_optimizer_step: lr must be finite and >= 0");
  QL_CHECK(beta1 >= 0 && beta1 < 1, "ql_optimizer_step: beta1 must be in [0, 1)");
  QL_CHECK(beta2 >= 0 && beta2 < 1, "ql_optimizer_step: beta2 must be in [0, 1)");
  QL_CHECK(eps > 0 && std::isfinite(eps), "ql_optimizer_step: eps must be finite and > 0");
  QL_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, "ql_optimizer_step: weight_decay must be finite and >= 0");
  QL_CHECK_FINITE(grad_scale);
  QL_CHECK(step >= 1, "ql_optimizer_step: step must be >= 1 (got %lld)", (long long)step);
  ql_ctx* ctx = opt->ctx;
  QL_GUARD({
    int64_t n;
    ql_status st = check_opt_index(__func__, opt, index, &n);
    if (st != QL_OK) return st;
    return QL_CALL(ctx, optimizer_step, opt, index, param, grad, lr, beta1, beta2, eps,
                   weight_decay, grad_scale, step);
  })
}

QL_API ql_status ql_optimizer_get_state(ql_optimizer* opt, int64_t index, float* host_m,
                                        float* host_v) {
  QL_CHECK_OPT(opt);
  QL_CHECK_PTR(host_m);
  QL_CHECK_PTR(host_v);
  ql_ctx* ctx = opt->ctx;
  QL_GUARD({
    int64_t n;
    ql_status st = check_opt_index(__func__, opt, index, &n);
    if (st != QL_OK) return st;
    return QL_CALL(ctx, optimizer_get_state, opt, index, host_m, host_v);
  })
}

QL_API ql_status ql_optimizer_set_state(ql_optimizer* opt, int64_t index, const float* host_m,
                                        const float* host_v) {
  QL_CHECK_OPT(opt);
  QL_CHECK_PTR(host_m);
  QL_CHECK_PTR(host_v);
  ql_ctx* ctx = opt->ctx;
  QL_GUARD({
    int64_t n;
    ql_status st = check_opt_index(__func__, opt, index, &n);
    if (st != QL_OK) return st;
    return QL_CALL(ctx, optimizer_set_state, opt, index, host_m, host_v);
  })
}

QL_API ql_status ql_optimizer_memory(const ql_optimizer* opt, uint64_t* host_out3) {
  QL_CHECK_OPT(opt);
  QL_CHECK_PTR(host_out3);
  ql_ctx* ctx = opt->ctx;
  QL_GUARD(return QL_CALL(ctx, optimizer_memory, opt, host_out3);)
}

QL_API void ql_optimizer_destroy(ql_optimizer* opt) {
  if (!opt) return;
  if (opt->magic != kOptimizerMagic) {  // destroyed twice, or not an optimizer: nothing to free
    ql_fail(QL_E_INVALID, "ql_optimizer_destroy: opt is not a live ql_optimizer (destroyed, or not a ql_optimizer)");
    return;
  }
  opt->magic = kDeadMagic;
  if (ql::parent_live(opt)) {  // see ql_qweight_destroy
    try {
      if (opt->ctx->be->optimizer_free) opt->ctx->be->optimizer_free(opt);
    } catch (...) {
    }
  }
  ql::handle_release(opt);
}

QL_API ql_status ql_sum_squares(ql_ctx* ctx, float* out, const float* g, int64_t n) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(g);
  QL_GUARD(return QL_CALL(ctx, sum_squares, ctx, out, g, n);)
}

QL_API ql_status ql_scale(ql_ctx* ctx, float* x, float alpha, int64_t n) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(n);
  QL_CHECK_NUMEL(n);
  QL_CHECK_PTR(x);
  QL_CHECK_FINITE(alpha);
  QL_GUARD(return QL_CALL(ctx, scale, ctx, x, alpha, n);)
}

QL_API ql_status ql_topk(ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits,
                         int64_t B, int64_t V, int64_t k, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(B);
  QL_CHECK_POS(V);
  QL_CHECK(V <= INT32_MAX, "ql_topk: V too large");
  QL_CHECK(k >= 1 && k <= V, "ql_topk: k must be in [1, V] (got %lld, V = %lld)", (long long)k, (long long)V);
  QL_CHECK_NUMEL(B, V);
  QL_CHECK_PTR(out_ids);
  QL_CHECK_PTR(out_vals);
  QL_CHECK_PTR(logits);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, topk, ctx, out_ids, out_vals, logits, B, V, k, dtype);)
}

}  // extern "C"
