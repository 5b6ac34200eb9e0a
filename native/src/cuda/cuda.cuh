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
// One declaration per op of backend_ops.h; context.cu fills the table from them.
#define QL_OP(ret, op, params) ret op params;
#include "backend_ops.h"

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
