// cuda.cuh — the CUDA backend's internal declarations (shared by nvcc and the cudaemu build):
// portability macros, context state (stream, caching allocator), launch helpers, and every
// function the backend table points at.
#pragma once

#if !defined(QL_CUDA_EMU)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
// QL_SHARED(type, name, count): static shared array; QL_DYN_SHARED(type, name): dynamic shared
// memory; QL_LAUNCH(grid, block, shmem, stream, kernel)(args...): a kernel launch. The emulation
// (emu/cuda_emu.h) defines the same three for the host build.
// 128-byte aligned: WMMA loads/stores need 256-bit aligned tile pointers.
#define QL_SHARED(T, name, count) __shared__ __align__(128) T name[count]
#define QL_DYN_SHARED(T, name)                                   \
  extern __shared__ __align__(128) unsigned char ql_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(ql_dyn_smem_)
#define QL_LAUNCH(grid, block, shmem, stream, ...) __VA_ARGS__<<<(grid), (block), (shmem), (stream)>>>
#endif

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "common/half.h"
#include "common/quant_math.h"

namespace ql::cuda {

#if defined(QL_CUDA_EMU)
constexpr const char* kBackendName = "cudaemu";
#else
constexpr const char* kBackendName = "cuda";
#endif

// A caching device allocator: freed blocks are kept per rounded size and reused; on an
// allocation failure the cache is released and the allocation retried once.
struct Allocator {
  std::multimap<size_t, void*> cached;  // rounded size -> block
  std::map<void*, size_t> live;         // block -> rounded size
  size_t cached_bytes = 0, live_bytes = 0, peak_bytes = 0;
  static size_t round(size_t b) {
    if (b <= 4096) return (b + 511) & ~size_t(511);
    if (b <= (size_t(1) << 20)) return (b + 4095) & ~size_t(4095);
    return (b + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);
  }
  cudaError_t alloc(void** out, size_t bytes);
  void release(void* p);
  void trim();
};

struct Ctx {
  int device = 0;
  int threads = 1;
  cudaStream_t stream = nullptr;
  cudaDeviceProp prop{};
  Allocator alloc;
};

inline Ctx& state(ql_ctx* ctx) { return *static_cast<Ctx*>(ctx->impl); }
inline cudaStream_t stream(ql_ctx* ctx) { return state(ctx).stream; }

// Scratch device memory from the context's allocator, released at scope end.
struct Scratch {
  ql_ctx* ctx;
  void* ptr = nullptr;
  Scratch(ql_ctx* c, size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

ql_status cuda_fail(cudaError_t e, const char* what);
#define QL_CUDA_TRY(expr)                                        \
  do {                                                           \
    cudaError_t _e = (expr);                                     \
    if (_e != cudaSuccess) return ::ql::cuda::cuda_fail(_e, #expr); \
  } while (0)
#define QL_LAUNCH_CHECK() QL_CUDA_TRY(cudaGetLastError())

inline unsigned ceil_div(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }
// A 1-D grid of at most 65535*... blocks; kernels use grid-stride loops.
inline unsigned grid_1d(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535 * 16) b = 65535 * 16;
  return unsigned(b < 1 ? 1 : b);
}

// Frozen 4-bit weight on the device (bitsandbytes layout).
struct QWeight {
  uint8_t* packed = nullptr;   // [ceil(n/2)]
  float* absmax = nullptr;     // [nb] (dequantized when double quant)
  uint8_t* qabsmax = nullptr;  // [nb]
  float* absmax2 = nullptr;    // [nb2]
  float offset = 0.0f;
};
inline QWeight& qw(const ql_qweight* w) { return *static_cast<QWeight*>(w->impl); }

// Which codebook a kernel uses (values in constant memory, c_code below).
struct Code16 {
  int qt;
};
inline Code16 code16(int quant_type) { return Code16{quant_type}; }

// ---------------------------------------------------------------- table entries
ql_status ctx_init(ql_ctx* ctx, int32_t n_threads, int32_t device);
void ctx_fini(ql_ctx* ctx);
ql_status describe(ql_ctx* ctx, std::string* json);
ql_status sync(ql_ctx* ctx);
ql_status alloc(ql_ctx* ctx, uint64_t bytes, void** out);
ql_status free_(ql_ctx* ctx, void* ptr);
ql_status copy_to_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);
ql_status copy_to_host(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);
ql_status copy_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);
ql_status fill_zero(ql_ctx* ctx, void* dst, uint64_t bytes);
ql_status convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in, int32_t in_dtype,
                  int64_t n);

ql_status quantize_4bit(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x, uint64_t n,
                        int32_t blocksize, int32_t quant_type);
ql_status dequantize_4bit(ql_ctx* ctx, float* out, const uint8_t* packed, const float* absmax,
                          uint64_t n, int32_t blocksize, int32_t quant_type);
ql_status quantize_absmax_8bit(ql_ctx* ctx, uint8_t* qabsmax, float* absmax2, float* offset,
                               const float* absmax, uint64_t nb, int32_t nested_blocksize);
ql_status dequantize_absmax_8bit(ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
                                 const float* absmax2, const float* offset, uint64_t nb,
                                 int32_t nested_blocksize);
ql_status qweight_quantize(ql_ctx* ctx, ql_qweight* w, const float* host_w);
ql_status qweight_import(ql_ctx* ctx, ql_qweight* w, const uint8_t* host_packed,
                         const float* host_absmax, const uint8_t* host_qabsmax,
                         const float* host_absmax2, float offset);
ql_status qweight_export(ql_ctx* ctx, const ql_qweight* w, uint8_t* host_packed,
                         float* host_absmax, uint8_t* host_qabsmax, float* host_absmax2,
                         float* host_offset);
ql_status qweight_bytes(const ql_qweight* w, int64_t* out2);
ql_status qweight_dequantize(ql_ctx* ctx, void* out, const ql_qweight* w, int32_t dtype);
void qweight_free(ql_qweight* w);

ql_status matmul_4bit(ql_ctx* ctx, void* y, const void* x, const ql_qweight* w, int64_t m,
                      int32_t dtype, int32_t accumulate);
ql_status matmul_4bit_backward(ql_ctx* ctx, void* dx, const void* dy, const ql_qweight* w,
                               int64_t m, int32_t dtype, int32_t accumulate);
ql_status gemm(ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
               const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k, int32_t trans_a,
               int32_t trans_b, float alpha, float beta);

ql_status embedding_forward(ql_ctx* ctx, void* out, const int32_t* ids, const void* table,
                            int64_t T, int64_t V, int64_t C, int32_t dtype, int32_t table_dtype);
ql_status embedding_backward(ql_ctx* ctx, float* dtable, const void* dout, const int32_t* ids,
                             int64_t T, int64_t V, int64_t C, int32_t dtype);
ql_status rmsnorm_forward(ql_ctx* ctx, void* out, float* rstd, const void* x, const float* weight,
                          int64_t T, int64_t C, float eps, int32_t dtype);
ql_status rmsnorm_backward(ql_ctx* ctx, void* dx, float* dweight, const void* dout, const void* x,
                           const float* weight, const float* rstd, int64_t T, int64_t C,
                           int32_t dtype);
ql_status rope_forward(ql_ctx* ctx, void* out, const void* x, const int32_t* positions,
                       const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype);
ql_status rope_backward(ql_ctx* ctx, void* dx, const void* dout, const int32_t* positions,
                        const float* inv_freq, int64_t T, int64_t Hn, int64_t D, int32_t dtype);
ql_status kv_cache_write(ql_ctx* ctx, void* k_cache, void* v_cache, const void* k, const void* v,
                         const int32_t* slots, int64_t T, int64_t num_blocks, int64_t block_size,
                         int64_t Hkv, int64_t D, int32_t dtype);
ql_status attention_paged(ql_ctx* ctx, void* out, const void* q, const void* k_cache,
                          const void* v_cache, const int32_t* host_block_tables,
                          const int32_t* host_q_start, const int32_t* host_ctx_lens, int64_t S,
                          int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t H,
                          int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype);
ql_status attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q, const void* k,
                            const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                            int64_t H, int64_t Hkv, int64_t D, float softmax_scale, int32_t dtype);
ql_status attention_backward(ql_ctx* ctx, void* dq, void* dk, void* dv, const void* dout,
                             const void* out, const float* lse, const void* q, const void* k,
                             const void* v, const int32_t* host_cu_seqlens, int64_t S, int64_t T,
                             int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                             int32_t dtype);
ql_status silu_mul_forward(ql_ctx* ctx, void* out, const void* gate, const void* up, int64_t n,
                           int32_t dtype);
ql_status silu_mul_backward(ql_ctx* ctx, void* dgate, void* dup, const void* dout,
                            const void* gate, const void* up, int64_t n, int32_t dtype);
ql_status add(ql_ctx* ctx, void* out, const void* a, const void* b, float alpha, int64_t n,
              int32_t dtype);
ql_status cross_entropy(ql_ctx* ctx, float* losses, void* dlogits, const void* logits,
                        const int32_t* targets, const float* weights, float grad_scale, int64_t T,
                        int64_t V, int32_t dtype);
ql_status lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A,
                       const float* B, int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                       float dropout_p, uint64_t seed, int32_t dtype);
ql_status lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy, const void* x,
                        const float* xa, const float* A, const float* B, int64_t T, int64_t in,
                        int64_t out, int64_t r, float scale, float dropout_p, uint64_t seed,
                        int32_t dtype);
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
ql_status sum_squares(ql_ctx* ctx, float* out, const float* g, int64_t n);
ql_status scale(ql_ctx* ctx, float* x, float alpha, int64_t n);
ql_status topk(ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits, int64_t B,
               int64_t V, int64_t k, int32_t dtype);

}  // namespace ql::cuda

// ---------------------------------------------------------------- device helpers
namespace ql::cuda {

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum / max for blockDim.x a multiple of 32 (<= 1024); scratch: 32 floats shared.
// Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : 0.0f;
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

// The three 4-bit codebooks (indexed by ql_quant_type, then code) in constant memory, copied
// into shared memory by the kernels that decode weights (a dynamic index into a by-value kernel
// parameter would force a local-memory copy).
static __constant__ const float c_code[3][16] = {QL_NF4_VALUES, QL_FP4_VALUES, QL_INT4_VALUES};
__device__ __forceinline__ void load_code16(float* code, const Code16& cb) {
  if (threadIdx.x < 16) code[threadIdx.x] = c_code[cb.qt][threadIdx.x];
}

__device__ __forceinline__ float ld(const void* p, int32_t dtype, int64_t i) {
  return dtype == QL_F32 ? static_cast<const float*>(p)[i]
                         : ql::bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
__device__ __forceinline__ void st(void* p, int32_t dtype, int64_t i, float v) {
  if (dtype == QL_F32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<uint16_t*>(p)[i] = ql::f32_to_bf16(v);
}

}  // namespace ql::cuda
