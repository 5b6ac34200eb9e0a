// linalg.h — the CPU backend's linear-algebra half: dense GEMM helpers (oneDNN), 4-bit matmul
// kernels, LoRA and optimizers. Table entries are declared at the bottom.
#pragma once

#include <cstdint>

#include "cpu/cpu.h"

namespace ql::cpu {

// Runs f with OpenMP's thread count set to n for the calling thread (oneDNN's OpenMP runtime
// reads it), restoring the previous value afterwards.
struct OmpThreads {
  int prev;
  explicit OmpThreads(int n) : prev(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(prev); }
};

// c [m, n] (ldc) = alpha · op(a) · op(b) + beta · c, all float32, row-major; op(a) [m, k]
// (a stored [k, m] when ta), op(b) [k, n] (b stored [n, k] when tb). beta = 0 never reads c.
void sgemm(int nthreads, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);
// Same with bf16 a and b (float32 accumulation); c is F32 or BF16 (c_dtype). oneDNN matmul,
// primitives cached per shape/strides/thread count.
void bgemm(int nthreads, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
           const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, void* c,
           int32_t c_dtype, int64_t ldc);

// Fused few-row 4-bit matmul: y [m, w.rows] (f32, row-major) = x [m, w.cols] (f32) · Wᵀ.
// Requires cols % 32 == 0 (all segments then align to 32 elements). AVX-512 version below is
// only called when state(ctx).avx512.
void matvec4_avx2(const ql_qweight* w, const float* xperm, float* y, int64_t m, int nthreads);
void matvec4_avx512(const ql_qweight* w, const float* xperm, float* y, int64_t m, int nthreads);
// bf16 activations on AVX-512 VNNI: x [m, cols] bf16 quantized to int8 per 64 elements, codes as
// int8 codebook values (see matmul4_avx512.cpp). Needs cols % 128 == 0, blocksize >= 64.
void matvec4_q8_avx512(const ql_qweight* w, const uint16_t* x, float* y, int64_t m, int nthreads);
// Dequantizes rows [r0, r1) of W into out ([r1-r0, cols], F32 or BF16), nthreads threads.
void dequant_rows(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                  int nthreads);
void dequant_rows_avx512(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                         int nthreads);

ql_status matmul_4bit(ql_ctx* ctx, void* y, const void* x, const ql_qweight* w, int64_t m,
                      int32_t dtype, int32_t accumulate);
ql_status matmul_4bit_backward(ql_ctx* ctx, void* dx, const void* dy, const ql_qweight* w,
                               int64_t m, int32_t dtype, int32_t accumulate);
ql_status gemm(ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
               const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k, int32_t trans_a,
               int32_t trans_b, float alpha, float beta);

ql_status lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
                       const float* B, int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                       float dropout_p, uint64_t seed, int32_t dtype);
ql_status lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy,
                        const void* x, const float* xa, const float* A, const float* B, int64_t T,
                        int64_t in, int64_t out, int64_t r, float scale, float dropout_p,
                        uint64_t seed, int32_t dtype);
ql_status lora_multi_forward(ql_ctx* ctx, void* y, const void* x, const int32_t* host_row_adapter,
                             const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs,
                             const int32_t* host_ranks, const float* host_scales,
                             int64_t n_adapters, int64_t T, int64_t in, int64_t out,
                             int32_t dtype);

ql_status optimizer_init(ql_optimizer* opt);
ql_status optimizer_add(ql_optimizer* opt, int64_t n, int64_t* out_index);
ql_status optimizer_size(const ql_optimizer* opt, int64_t index, int64_t* out_n,
                         int64_t* out_count);
ql_status optimizer_step(ql_optimizer* opt, int64_t index, float* param, const float* grad,
                         float lr, float beta1, float beta2, float eps, float weight_decay,
                         float grad_scale, int64_t step);
ql_status optimizer_get_state(ql_optimizer* opt, int64_t index, float* host_m, float* host_v);
ql_status optimizer_set_state(ql_optimizer* opt, int64_t index, const float* host_m,
                              const float* host_v);
ql_status optimizer_memory(const ql_optimizer* opt, uint64_t* host_out3);
void optimizer_free(ql_optimizer* opt);

}  // namespace ql::cpu
