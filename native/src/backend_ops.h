// backend_ops.h — the one list of backend operations: an X-macro list, no include guard.
//
// Each QL_OP(return type, op, (parameters)) is one entry of the backend table. The includer
// defines QL_OP, then includes this file (which #undefs it at the end):
//   backend.h          #define QL_OP(ret, op, params) ret(*op) params;   -> struct ql_backend
//   cpu/cpu.h,         #define QL_OP(ret, op, params) ret op params;     -> one declaration per op
//   cuda/cuda.cuh        in the backend's namespace (a definition that drifts fails to link)
//   cpu/table.cpp,     #define QL_OP(ret, op, params) t.op = op;         -> the table filled from
//   cuda/context.cu      that namespace
// tests/native/contract_test.ts reads this file: keep one QL_OP per entry, its parameters in one
// parenthesized list. An op named like a public function (ql_<op> in qlora.h) takes the same
// parameters unless that test lists it as different by design.
#ifndef QL_OP
#error "define QL_OP(ret, name, params) before including backend_ops.h"
#endif

QL_OP(ql_status, ctx_init, (ql_ctx* ctx, int32_t n_threads, int32_t device))
QL_OP(void, ctx_fini, (ql_ctx* ctx))
QL_OP(ql_status, describe, (ql_ctx* ctx, std::string* json_out))
QL_OP(ql_status, sync, (ql_ctx* ctx))

QL_OP(ql_status, alloc, (ql_ctx* ctx, uint64_t bytes, void** out))
QL_OP(ql_status, free_, (ql_ctx* ctx, void* ptr))
QL_OP(ql_status, copy_to_device, (ql_ctx* ctx, void* dst, const void* host_src, uint64_t bytes))
QL_OP(ql_status, copy_to_host, (ql_ctx* ctx, void* host_dst, const void* src, uint64_t bytes))
QL_OP(ql_status, copy_device, (ql_ctx* ctx, void* dst, const void* src, uint64_t bytes))
QL_OP(ql_status, fill_zero, (ql_ctx* ctx, void* dst, uint64_t bytes))
QL_OP(ql_status, convert, (ql_ctx* ctx, void* out, int32_t out_dtype, const void* in,
      int32_t in_dtype, int64_t n))

QL_OP(ql_status, quantize_4bit, (ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x,
      uint64_t n, int32_t blocksize, int32_t quant_type))
QL_OP(ql_status, dequantize_4bit, (ql_ctx* ctx, float* out, const uint8_t* packed,
      const float* absmax, uint64_t n, int32_t blocksize, int32_t quant_type))
QL_OP(ql_status, quantize_absmax_8bit, (ql_ctx* ctx, uint8_t* qabsmax, float* absmax2,
      float* offset, const float* absmax, uint64_t nb, int32_t nested_blocksize))
QL_OP(ql_status, dequantize_absmax_8bit, (ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
      const float* absmax2, const float* offset, uint64_t nb, int32_t nested_blocksize))

// w's metadata is filled in; the backend stores the weights and sets w->impl.
// host_w is [rows, cols] of w_dtype: F32, BF16 or F16 (a backend widens 16-bit sources as it
// goes, never into a whole-tensor f32 copy on the host).
QL_OP(ql_status, qweight_quantize, (ql_ctx* ctx, ql_qweight* w, const void* host_w, int32_t w_dtype))
// host_absmax [nb] is always given (for double quant, already dequantized by the api);
// host_qabsmax/host_absmax2/offset are the double-quant constants when w->double_quant.
QL_OP(ql_status, qweight_import, (ql_ctx* ctx, ql_qweight* w, const uint8_t* host_packed,
      const float* host_absmax, const uint8_t* host_qabsmax, const float* host_absmax2,
      float offset))
QL_OP(ql_status, qweight_export, (ql_ctx* ctx, const ql_qweight* w, uint8_t* host_packed,
      float* host_absmax, uint8_t* host_qabsmax, float* host_absmax2, float* host_offset))
// host_out2 = bytes of packed codes, bytes of quantization constants
QL_OP(ql_status, qweight_bytes, (const ql_qweight* w, int64_t* host_out2))
QL_OP(ql_status, qweight_dequantize, (ql_ctx* ctx, void* out, const ql_qweight* w, int32_t dtype))
QL_OP(void, qweight_free, (ql_qweight* w))

QL_OP(ql_status, matmul_4bit, (ql_ctx* ctx, void* y, const void* x, const ql_qweight* w, int64_t m,
      int32_t dtype, int32_t accumulate))
QL_OP(ql_status, matmul_4bit_backward, (ql_ctx* ctx, void* dx, const void* dy, const ql_qweight* w,
      int64_t m, int32_t dtype, int32_t accumulate))
QL_OP(ql_status, gemm, (ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
      const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k, int32_t trans_a,
      int32_t trans_b, float alpha, float beta))

QL_OP(ql_status, embedding_forward, (ql_ctx* ctx, void* out, const int32_t* ids, const void* table,
      int64_t T, int64_t V, int64_t C, int32_t dtype, int32_t table_dtype))
QL_OP(ql_status, embedding_backward, (ql_ctx* ctx, float* dtable, const void* dout,
      const int32_t* ids, int64_t T, int64_t V, int64_t C, int32_t dtype))
QL_OP(ql_status, rmsnorm_forward, (ql_ctx* ctx, void* out, float* rstd, const void* x,
      const float* weight, int64_t T, int64_t C, float eps, int32_t dtype))
QL_OP(ql_status, rmsnorm_backward, (ql_ctx* ctx, void* dx, float* dweight, const void* dout,
      const void* x, const float* weight, const float* rstd, int64_t T, int64_t C, int32_t dtype))
QL_OP(ql_status, rope_forward, (ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
      const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype))
QL_OP(ql_status, rope_backward, (ql_ctx* ctx, void* dx, const void* dout, const int32_t* positions,
      const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype))
QL_OP(ql_status, kv_cache_write, (ql_ctx* ctx, void* k_cache, void* v_cache, const void* k,
      const void* v, const int32_t* slots, int64_t T, int64_t num_blocks, int64_t block_size,
      int64_t Hkv, int64_t D, int32_t dtype))
QL_OP(ql_status, attention_paged, (ql_ctx* ctx, void* out, const void* q, const void* k_cache,
      const void* v_cache, const int32_t* host_block_tables, const int32_t* host_q_start,
      const int32_t* host_ctx_lens, int64_t S, int64_t max_blocks, int64_t num_blocks,
      int64_t block_size, int64_t H, int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype))
QL_OP(ql_status, attention_forward, (ql_ctx* ctx, void* out, float* lse, const void* q,
      const void* k, const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T, int64_t H,
      int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype))
QL_OP(ql_status, attention_backward, (ql_ctx* ctx, void* dq, void* dk, void* dv, const void* dout,
      const void* out, const float* lse, const void* q, const void* k, const void* v,
      const int32_t* host_cu_seqlens, int64_t S, int64_t T, int64_t H, int64_t Hkv, int64_t D,
      float softmax_scale, int32_t dtype))
QL_OP(ql_status, silu_mul_forward, (ql_ctx* ctx, void* out, const void* gate, const void* up,
      int64_t n, int32_t dtype))
QL_OP(ql_status, silu_mul_backward, (ql_ctx* ctx, void* dgate, void* dup, const void* dout,
      const void* gate, const void* up, int64_t n, int32_t dtype))
QL_OP(ql_status, add, (ql_ctx* ctx, void* out, const void* a, const void* b, float alpha, int64_t n,
      int32_t dtype))
QL_OP(ql_status, cross_entropy, (ql_ctx* ctx, float* losses, void* dlogits, const void* logits,
      const int32_t* targets, const float* weights, float grad_scale, int64_t T, int64_t V,
      int32_t dtype))

QL_OP(ql_status, lora_forward, (ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
      const float* B, int64_t T, int64_t in, int64_t out, int64_t r, float scale, float dropout_p,
      uint64_t seed, int32_t dtype))
QL_OP(ql_status, lora_backward, (ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy,
      const void* x, const float* xa, const float* A, const float* B, int64_t T, int64_t in,
      int64_t out, int64_t r, float scale, float dropout_p, uint64_t seed, int32_t dtype))
QL_OP(ql_status, lora_multi_forward, (ql_ctx* ctx, void* y, const void* x,
      const int32_t* host_row_adapter, const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs,
      const int32_t* host_ranks, const float* host_scales, int64_t n_adapters, int64_t T,
      int64_t in, int64_t out, int32_t dtype))

// opt's metadata is filled in; the backend sets opt->impl.
QL_OP(ql_status, optimizer_init, (ql_optimizer* opt))
QL_OP(ql_status, optimizer_add, (ql_optimizer* opt, int64_t n, int64_t* out_index))
// index is checked against the count the backend reports through optimizer_size.
QL_OP(ql_status, optimizer_size, (const ql_optimizer* opt, int64_t index, int64_t* out_n,
      int64_t* out_count))
QL_OP(ql_status, optimizer_step, (ql_optimizer* opt, int64_t index, float* param, const float* grad,
      float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
      int64_t step))
QL_OP(ql_status, optimizer_get_state, (ql_optimizer* opt, int64_t index, float* host_m,
      float* host_v))
QL_OP(ql_status, optimizer_set_state, (ql_optimizer* opt, int64_t index, const float* host_m,
      const float* host_v))
QL_OP(ql_status, optimizer_memory, (const ql_optimizer* opt, uint64_t* host_out3))
QL_OP(void, optimizer_free, (ql_optimizer* opt))

QL_OP(ql_status, sum_squares, (ql_ctx* ctx, float* out, const float* g, int64_t n))
QL_OP(ql_status, scale, (ql_ctx* ctx, float* x, float alpha, int64_t n))
QL_OP(ql_status, topk, (ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits,
      int64_t B, int64_t V, int64_t k, int32_t dtype))

#undef QL_OP
