/*
 * qlora.h — the whole contract between the TypeScript server and native code.
 *
 * Three shared libraries implement it: libqlora_cpu.so (C++ + SIMD + oneDNN),
 * libqlora_cuda.so (nvcc) and libqlora_cudaemu.so (the CUDA sources compiled for the
 * host by the emulation layer). The server loads exactly one of them.
 *
 * Conventions
 * - Every function that can fail returns ql_status; QL_OK is 0. On failure
 *   ql_last_error() returns a message for the calling thread (valid until the next
 *   failing call on that thread).
 * - "Device" pointers come from ql_alloc() on the same context. On the CPU backends they
 *   are ordinary host pointers. Arguments named host_* are host memory on every backend.
 * - Matrices are row-major. Shapes are written as [rows, cols]. T is the number of token
 *   rows in a batch, C a hidden size, H query heads, Hkv key/value heads, D head dim.
 * - Activation dtypes: QL_F32 or QL_BF16 (argument `dtype`). LoRA weights, norm weights,
 *   softmax statistics, losses and optimizer state are always float32.
 * - Forward/backward pairs take (outputs, inputs, weights, sizes) in that order.
 * - Backward outputs marked "+=" accumulate into what is there; others overwrite.
 * - Calls on one context are not thread-safe; use one context per thread.
 * - Weights (ql_qweight) and optimizers (ql_optimizer) belong to the context that made them:
 *   destroy them before it.
 * - Handles (ql_ctx, ql_qweight, ql_optimizer) are checked on every call: a handle that was
 *   destroyed, a weight or optimizer whose context was destroyed, or a pointer to readable
 *   memory that is not a handle of the expected kind gives QL_E_INVALID with a message ("... is
 *   not a live ql_ctx (destroyed, or not a context)", "the context of w was destroyed"); it is
 *   never dereferenced further. Destroying such a handle does nothing (and sets ql_last_error).
 *   The library keeps destroyed handles' memory and reuses it only after 1024 more handles of the
 *   same kind were destroyed, so detection of a stale handle is certain up to then and
 *   best-effort after. A pointer to unmapped memory cannot be detected: it crashes.
 * - Sizes: every product of sizes a call implies is checked for overflow (and kept below
 *   2^40 elements) before anything is read or written; a too-large call is QL_E_INVALID.
 */
#ifndef QLORA_H
#define QLORA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define QL_API __declspec(dllexport)
#else
#define QL_API __attribute__((visibility("default")))
#endif

#define QL_ABI_VERSION 2u

typedef int32_t ql_status;
enum {
  QL_OK = 0,
  QL_E_INVALID = 1,      /* bad argument: null pointer, shape mismatch, unknown enum */
  QL_E_OOM = 2,          /* allocation failed */
  QL_E_UNSUPPORTED = 3,  /* valid request this backend cannot do */
  QL_E_BACKEND = 4,      /* driver/runtime failure */
  QL_E_IO = 5,           /* file error (paged optimizer spill files) */
  QL_E_INTERNAL = 6      /* bug: an invariant broke */
};

typedef enum { QL_F32 = 0, QL_BF16 = 1, QL_F16 = 2, QL_U8 = 3, QL_I32 = 4 } ql_dtype;
typedef enum { QL_NF4 = 0, QL_FP4 = 1, QL_INT4 = 2 } ql_quant_type;
typedef enum { QL_OPT_ADAMW = 0, QL_OPT_PAGED_ADAMW = 1, QL_OPT_PAGED_ADAMW_8BIT = 2 } ql_optimizer_kind;

typedef struct ql_ctx ql_ctx;             /* a backend instance: threads, device, stream */
typedef struct ql_qweight ql_qweight;     /* a frozen 4-bit weight matrix [rows, cols] */
typedef struct ql_optimizer ql_optimizer; /* AdamW state for a set of parameter tensors */

/* ---------------------------------------------------------------- library, context */

QL_API uint32_t ql_abi_version(void);
/* "cpu", "cuda" or "cudaemu" (static string). */
QL_API const char* ql_backend_name(void);
/* Message of the last failed call on this thread ("" if none). */
QL_API const char* ql_last_error(void);
/* n_threads <= 0 picks the number of online cores. device: GPU ordinal (ignored on CPU). */
QL_API ql_status ql_ctx_create(int32_t n_threads, int32_t device, ql_ctx** out);
QL_API void ql_ctx_destroy(ql_ctx* ctx);
/* Writes a NUL-terminated JSON object describing the backend (name, threads, isa, device,
 * memory) into buf. QL_E_INVALID if cap is too small. */
QL_API ql_status ql_ctx_describe(ql_ctx* ctx, char* buf, uint64_t cap);
/* Waits for all queued work on the context (no-op on CPU). */
QL_API ql_status ql_sync(ql_ctx* ctx);

/* ---------------------------------------------------------------- memory */

/* 64-byte aligned device memory; bytes > 0. */
QL_API ql_status ql_alloc(ql_ctx* ctx, uint64_t bytes, void** out);
QL_API ql_status ql_free(ql_ctx* ctx, void* ptr); /* ptr may be NULL */
QL_API ql_status ql_copy_to_device(ql_ctx* ctx, void* dst, const void* host_src, uint64_t bytes);
QL_API ql_status ql_copy_to_host(ql_ctx* ctx, void* host_dst, const void* src, uint64_t bytes);
QL_API ql_status ql_copy_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);
QL_API ql_status ql_fill_zero(ql_ctx* ctx, void* dst, uint64_t bytes);
/* out[n] = in[n] converted; dtypes QL_F32, QL_BF16 (round to nearest even), QL_F16. */
QL_API ql_status ql_convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in,
                            int32_t in_dtype, int64_t n);

/* ---------------------------------------------------------------- files */

/* Reads bytes [offset, offset + bytes) of the file at path (NUL-terminated) into host_dst.
 * Returns the number of bytes read (less than `bytes` only at the end of the file), or -errno.
 * direct = 1 reads around the page cache (O_DIRECT: the disk writes straight into host_dst, no
 * copy through the kernel) when offset, bytes and host_dst are multiples of 4096 and the file
 * system allows it, else reads as usual. It touches no context and no ql_last_error, so it may
 * run on any thread: the model loader calls it off the JavaScript thread to read the next
 * tensor while the current one quantizes. */
QL_API int64_t ql_read_file(const char* path, uint64_t offset, uint64_t bytes, void* host_dst,
                            int32_t direct);

/* ---------------------------------------------------------------- blockwise 4-bit quantization
 * bitsandbytes semantics (see shared/reference/README.md): blocks of `blocksize`
 * consecutive elements (32..4096, power of two); absmax per block; code = nearest codebook
 * entry (ties to the lower code); byte i = code[2i] << 4 | code[2i+1]; an odd tail pads
 * with the code of 0.0. Double quantization: offset = mean(absmax); (absmax - offset)
 * quantized blockwise (nested_blocksize 256) to 8-bit codes of the signed dynamic map. */

/* packed [ceil(n/2)] u8, absmax [ceil(n/blocksize)] f32  <-  x [n] f32 */
QL_API ql_status ql_quantize_4bit(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x,
                                  uint64_t n, int32_t blocksize, int32_t quant_type);
/* out [n] f32  <-  packed, absmax */
QL_API ql_status ql_dequantize_4bit(ql_ctx* ctx, float* out, const uint8_t* packed,
                                    const float* absmax, uint64_t n, int32_t blocksize,
                                    int32_t quant_type);
/* qabsmax [nb] u8, absmax2 [ceil(nb/nested_blocksize)] f32, offset [1] f32  <-  absmax [nb] */
QL_API ql_status ql_quantize_absmax_8bit(ql_ctx* ctx, uint8_t* qabsmax, float* absmax2,
                                         float* offset, const float* absmax, uint64_t nb,
                                         int32_t nested_blocksize);
/* absmax [nb] f32 = dyn[qabsmax] * absmax2[b / nested_blocksize] + offset[0] */
QL_API ql_status ql_dequantize_absmax_8bit(ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
                                           const float* absmax2, const float* offset,
                                           uint64_t nb, int32_t nested_blocksize);
/* The 16-entry codebook of a quant type, and the 256-entry signed dynamic map (host). */
QL_API ql_status ql_codebook(int32_t quant_type, float* host_out16);
QL_API ql_status ql_dynamic_map(float* host_out256);

/* ---------------------------------------------------------------- 4-bit weights (frozen)
 * A ql_qweight holds W [rows, cols] (rows = out features, cols = in features) quantized
 * over its row-major flattening. The backend may keep it in its own internal layout;
 * export always gives bitsandbytes' layout. */

/* host_w [rows, cols] of w_dtype (F32, BF16, F16). double_quant: 0 or 1. */
QL_API ql_status ql_qweight_quantize(ql_ctx* ctx, const void* host_w, int32_t w_dtype,
                                     int64_t rows, int64_t cols, int32_t quant_type,
                                     int32_t blocksize, int32_t double_quant, ql_qweight** out);
/* From bitsandbytes' serialized form (host arrays). Without double quant: host_absmax [nb],
 * host_qabsmax/host_absmax2 NULL. With it: host_absmax NULL, host_qabsmax [nb],
 * host_absmax2 [ceil(nb/nested_blocksize)], offset. host_code [16] is the stored quant_map:
 * it must equal the codebook of quant_type. */
QL_API ql_status ql_qweight_import(ql_ctx* ctx, int64_t rows, int64_t cols, int32_t quant_type,
                                   int32_t blocksize, const uint8_t* host_packed,
                                   const float* host_absmax, const uint8_t* host_qabsmax,
                                   const float* host_absmax2, float offset,
                                   int32_t nested_blocksize, const float* host_code,
                                   ql_qweight** out);
/* Writes bitsandbytes' layout into host arrays sized as for import; pointers for parts the
 * weight does not have must be NULL (absmax is always available, dequantized if needed). */
QL_API ql_status ql_qweight_export(ql_ctx* ctx, const ql_qweight* w, uint8_t* host_packed,
                                   float* host_absmax, uint8_t* host_qabsmax,
                                   float* host_absmax2, float* host_offset);
/* host_out[8] = rows, cols, quant_type, blocksize, double_quant, nested_blocksize,
 * bytes of packed codes, bytes of quantization constants (absmax or qabsmax+absmax2+offset). */
QL_API ql_status ql_qweight_info(const ql_qweight* w, int64_t* host_out8);
/* out [rows, cols] of dtype (F32 or BF16), device memory. */
QL_API ql_status ql_qweight_dequantize(ql_ctx* ctx, void* out, const ql_qweight* w,
                                       int32_t dtype);
QL_API void ql_qweight_destroy(ql_qweight* w);

/* ---------------------------------------------------------------- matmul */

/* y [m, rows] (= or += when accumulate) x [m, cols] · Wᵀ.  Few rows: fused dequant;
 * many rows: dequantized tiles and a dense GEMM. */
QL_API ql_status ql_matmul_4bit(ql_ctx* ctx, void* y, const void* x, const ql_qweight* w,
                                int64_t m, int32_t dtype, int32_t accumulate);
/* dx [m, cols] (= or +=) dy [m, rows] · W.  W is frozen: there is no dW. */
QL_API ql_status ql_matmul_4bit_backward(ql_ctx* ctx, void* dx, const void* dy,
                                         const ql_qweight* w, int64_t m, int32_t dtype,
                                         int32_t accumulate);
/* Dense: c [m, n] = alpha · op(a) · op(b) + beta · c, op(a) [m, k], op(b) [k, n];
 * trans_a: a is stored [k, m]; trans_b: b is stored [n, k]. a/b dtypes F32 or BF16 each,
 * c F32 or BF16. */
QL_API ql_status ql_gemm(ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
                         const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k,
                         int32_t trans_a, int32_t trans_b, float alpha, float beta);

/* ---------------------------------------------------------------- transformer ops */

/* out [T, C] = table [V, C] rows of ids [T] (i32 device); table_dtype F32 or BF16.
 * An id outside [0, V) is QL_E_INVALID (checked before anything is written). */
QL_API ql_status ql_embedding_forward(ql_ctx* ctx, void* out, const int32_t* ids,
                                      const void* table, int64_t T, int64_t V, int64_t C,
                                      int32_t dtype, int32_t table_dtype);
/* dtable [V, C] f32 += scatter of dout [T, C]. An id outside [0, V) is QL_E_INVALID (checked
 * before anything is written; backends check device-side ids themselves). */
QL_API ql_status ql_embedding_backward(ql_ctx* ctx, float* dtable, const void* dout,
                                       const int32_t* ids, int64_t T, int64_t V, int64_t C,
                                       int32_t dtype);

/* out [T, C] = x / rms(x) * weight; rstd [T] f32 (nullable) saved for backward. out may equal x. */
QL_API ql_status ql_rmsnorm_forward(ql_ctx* ctx, void* out, float* rstd, const void* x,
                                    const float* weight, int64_t T, int64_t C, float eps,
                                    int32_t dtype);
/* dx [T, C] +=, dweight [C] += (nullable) from dout [T, C]. */
QL_API ql_status ql_rmsnorm_backward(ql_ctx* ctx, void* dx, float* dweight, const void* dout,
                                     const void* x, const float* weight, const float* rstd,
                                     int64_t T, int64_t C, int32_t dtype);

/* Rotary embedding, Hugging Face rotate_half layout: pairs (i, i + D/2).
 * out [T, Hn, D] = rope(x [T, Hn, D]) at positions [T] (i32 device) with inv_freq [D/2]
 * (f32 device; the caller applies rope_scaling when building it). out may equal x. */
QL_API ql_status ql_rope_forward(ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
                                 const float* inv_freq, int64_t T, int64_t Hn, int64_t D,
                                 int32_t dtype);
/* dx = rope⁻¹(dout) (the transpose rotation). dx may equal dout. */
QL_API ql_status ql_rope_backward(ql_ctx* ctx, void* dx, const void* dout,
                                  const int32_t* positions, const float* inv_freq, int64_t T,
                                  int64_t Hn, int64_t D, int32_t dtype);

/* Paged KV cache, one layer: k_cache, v_cache [num_blocks, block_size, Hkv, D].
 * Writes k, v [T, Hkv, D] rows into slots [T] (i32 device, slot = block * block_size + offset;
 * a negative slot skips the row; a slot ≥ num_blocks·block_size is QL_E_INVALID, checked before
 * anything is written; with duplicate slots which row wins is unspecified). */
QL_API ql_status ql_kv_cache_write(ql_ctx* ctx, void* k_cache, void* v_cache, const void* k,
                                   const void* v, const int32_t* slots, int64_t T,
                                   int64_t num_blocks, int64_t block_size, int64_t Hkv,
                                   int64_t D, int32_t dtype);
/* Causal attention of S sequences over the paged cache (prefill and decode in one call).
 * Sequence s owns query rows [q_start[s], q_start[s+1]) of q [T, H, D]; it has ctx_lens[s]
 * tokens in the cache (its new tokens already written), its queries are the last
 * q_len = q_start[s+1] - q_start[s] of them, and block_tables [S, max_blocks] maps its
 * token j to slot block_tables[s][j / block_size] * block_size + j % block_size.
 * Query head h reads kv head h / (H / Hkv). out [T, H, D]. All int arrays are host memory;
 * block-table entries past a sequence's used blocks are never read. 1 <= S <= 2^20 (checked
 * before host_q_start is read); max_blocks * block_size must stay below 2^40. */
QL_API ql_status ql_attention_paged(ql_ctx* ctx, void* out, const void* q, const void* k_cache,
                                    const void* v_cache, const int32_t* host_block_tables,
                                    const int32_t* host_q_start, const int32_t* host_ctx_lens,
                                    int64_t S, int64_t max_blocks, int64_t num_blocks,
                                    int64_t block_size, int64_t H, int64_t Hkv, int64_t D,
                                    float softmax_scale, int32_t dtype);
/* Training attention on packed contiguous sequences: rows [cu_seqlens[s], cu_seqlens[s+1])
 * of q [T, H, D], k, v [T, Hkv, D] form sequence s; causal inside a sequence, nothing across.
 * out [T, H, D]; lse [T, H] f32 (log-sum-exp of scaled scores) saved for backward.
 * host_cu_seqlens [S+1], cu_seqlens[0] = 0, cu_seqlens[S] = T; 1 <= S <= T <= INT32_MAX (checked
 * before host_cu_seqlens is read). */
QL_API ql_status ql_attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q,
                                      const void* k, const void* v,
                                      const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                                      int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                                      int32_t dtype);
/* dq [T, H, D], dk, dv [T, Hkv, D] (overwritten) from dout, out, lse and the inputs. */
QL_API ql_status ql_attention_backward(ql_ctx* ctx, void* dq, void* dk, void* dv,
                                       const void* dout, const void* out, const float* lse,
                                       const void* q, const void* k, const void* v,
                                       const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                                       int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                                       int32_t dtype);

/* out [n] = silu(gate) * up. out may equal gate or up. */
QL_API ql_status ql_silu_mul_forward(ql_ctx* ctx, void* out, const void* gate, const void* up,
                                     int64_t n, int32_t dtype);
/* dgate [n], dup [n] (overwritten) from dout [n]. dgate/dup may alias dout, gate or up
 * element for element (not each other). */
QL_API ql_status ql_silu_mul_backward(ql_ctx* ctx, void* dgate, void* dup, const void* dout,
                                      const void* gate, const void* up, int64_t n,
                                      int32_t dtype);
/* out [n] = a + alpha · b. out may equal a or b. */
QL_API ql_status ql_add(ql_ctx* ctx, void* out, const void* a, const void* b, float alpha,
                        int64_t n, int32_t dtype);

/* Softmax cross-entropy over logits [T, V] (dtype) with targets [T] (i32 device; < 0 means
 * ignored; ≥ V is QL_E_INVALID) and weights [T] (f32 device, nullable = all 1). losses [T] f32 = weight · nll
 * (0 for ignored rows). dlogits [T, V] (dtype, nullable; may equal logits) =
 * grad_scale · weight · (softmax − onehot), 0 for ignored rows. */
QL_API ql_status ql_cross_entropy(ql_ctx* ctx, float* losses, void* dlogits, const void* logits,
                                  const int32_t* targets, const float* weights, float grad_scale,
                                  int64_t T, int64_t V, int32_t dtype);

/* ---------------------------------------------------------------- LoRA */

/* y [T, out] += scale · (drop(x) [T, in] · Aᵀ) · Bᵀ,  A [r, in], B [out, r] f32.
 * Dropout p in [0, 1): element (t, i) of x is kept iff hash(seed, t * in + i) ≥ p, kept
 * elements scaled by 1/(1-p); the same seed reproduces the mask in backward.
 * xa [T, r] f32 (nullable) saves drop(x)·Aᵀ for backward. */
QL_API ql_status ql_lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
                                 const float* B, int64_t T, int64_t in, int64_t out, int64_t r,
                                 float scale, float dropout_p, uint64_t seed, int32_t dtype);
/* dx [T, in] += (nullable), dA [r, in] +=, dB [out, r] += from dy [T, out]. */
QL_API ql_status ql_lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy,
                                  const void* x, const float* xa, const float* A, const float* B,
                                  int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                                  float dropout_p, uint64_t seed, int32_t dtype);
/* Serving, many adapters in one batch: y [T, out] += scale_a · x_t · A_aᵀ · B_aᵀ for each row t
 * with a = host_row_adapter[t] (−1: no adapter). Adapter a has A at host_a_ptrs[a] ([r_a, in]
 * f32 device), B at host_b_ptrs[a] ([out, r_a]), rank host_ranks[a] (1..1024), scale
 * host_scales[a]. Ranks may differ; nothing is padded. */
QL_API ql_status ql_lora_multi_forward(ql_ctx* ctx, void* y, const void* x,
                                       const int32_t* host_row_adapter,
                                       const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs,
                                       const int32_t* host_ranks, const float* host_scales,
                                       int64_t n_adapters, int64_t T, int64_t in, int64_t out,
                                       int32_t dtype);

/* ---------------------------------------------------------------- optimizers */

/* kind: ql_optimizer_kind. budget_bytes: for paged kinds, the most optimizer-state bytes kept
 * resident (0 = unlimited); state beyond it lives in pageable memory (CPU: a file-backed
 * mapping under spill_dir, NULL = system temp dir; CUDA: managed memory) and is brought back
 * per parameter tensor before its step. */
QL_API ql_status ql_optimizer_create(ql_ctx* ctx, int32_t kind, uint64_t budget_bytes,
                                     const char* spill_dir, ql_optimizer** out);
/* Registers a parameter tensor of n f32 elements; its state starts at zero. */
QL_API ql_status ql_optimizer_add(ql_optimizer* opt, int64_t n, int64_t* out_index);
/* One AdamW step on tensor `index` with bitsandbytes' update rule:
 *   g' = g · grad_scale; m = b1·m + (1−b1)·g'; v = b2·v + (1−b2)·g'²;
 *   p ← p·(1 − lr·wd);  p ← p − lr · (√(1−b2^t)/(1−b1^t)) · m / (√v + eps·√(1−b2^t)).
 * step t ≥ 1. param [n], grad [n] f32 device. */
QL_API ql_status ql_optimizer_step(ql_optimizer* opt, int64_t index, float* param,
                                   const float* grad, float lr, float beta1, float beta2,
                                   float eps, float weight_decay, float grad_scale, int64_t step);
/* host_m, host_v [n] f32: read or write tensor `index`'s state (dequantized for 8-bit). */
QL_API ql_status ql_optimizer_get_state(ql_optimizer* opt, int64_t index, float* host_m,
                                        float* host_v);
QL_API ql_status ql_optimizer_set_state(ql_optimizer* opt, int64_t index, const float* host_m,
                                        const float* host_v);
/* host_out[3] = bytes of state in total, bytes resident now, peak resident bytes. */
QL_API ql_status ql_optimizer_memory(const ql_optimizer* opt, uint64_t* host_out3);
QL_API void ql_optimizer_destroy(ql_optimizer* opt);

/* out [1] f32 device += Σ g[i]² over g [n] f32. */
QL_API ql_status ql_sum_squares(ql_ctx* ctx, float* out, const float* g, int64_t n);
/* x [n] f32 *= alpha. */
QL_API ql_status ql_scale(ql_ctx* ctx, float* x, float alpha, int64_t n);

/* ---------------------------------------------------------------- sampling helpers */

/* For each row b of logits [B, V] (dtype): the k largest entries in descending order:
 * out_ids [B, k] i32, out_vals [B, k] f32 (device). Ties: lower id first; NaN ranks below
 * every number. */
QL_API ql_status ql_topk(ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits,
                         int64_t B, int64_t V, int64_t k, int32_t dtype);

#ifdef __cplusplus
}
#endif
#endif /* QLORA_H */
