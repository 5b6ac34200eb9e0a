// linalg.h — the CPU backend's linear-algebra half: dense GEMM helpers (oneDNN), 4-bit matmul
// kernels, LoRA and optimizers. Its table entries are declared in cpu.h (from backend_ops.h).
#pragma once

#include <cstdint>

#include "common/quant_math.h"
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
// One full 4-bit block [start, start + blocksize) of x (F32/BF16/F16): writes its packed codes
// and returns its absmax, exactly as quant.cpp's path does (see quant_avx512.cpp).
float quantize_block_avx512(uint8_t* packed, const void* x, int32_t dtype, uint64_t start, int blocksize,
                            const Codebook& cb);
void matvec4_avx512(const ql_qweight* w, const float* xperm, float* y, int64_t m, int nthreads);
// bf16 activations on AVX-512 VNNI: x [m, cols] bf16 quantized to int8 per 64 elements, codes as
// int8 codebook values (see matmul4_avx512.cpp). Needs cols % 128 == 0, blocksize >= 64.
void matvec4_q8_avx512(const ql_qweight* w, const uint16_t* x, float* y, int64_t m, int nthreads);
// Small M (2..64 rows): y [m, w.rows] f32 = x [m, w.cols] · Wᵀ, each group of 4 W rows
// decoded once and applied to every row. AVX-512: x of dtype (F32: FMAs; BF16: vdpbf16ps on
// bf16-rounded weights); AVX2: x float32. Any cols.
void matmul4_smallm_avx512(const ql_qweight* w, const void* x, int32_t dtype, float* y, int64_t m,
                           int nthreads);
void matmul4_smallm_avx2(const ql_qweight* w, const float* x, float* y, int64_t m, int nthreads);
// Dequantizes rows [r0, r1) of W into out ([r1-r0, cols], F32 or BF16), nthreads threads.
void dequant_rows(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                  int nthreads);
void dequant_rows_avx512(const ql_qweight* w, int64_t r0, int64_t r1, void* out, int32_t dtype,
                         int nthreads);

}  // namespace ql::cpu
