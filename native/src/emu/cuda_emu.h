// cuda_emu.h — runs CUDA kernel sources on the CPU (force-included before every .cu file of the
// cudaemu library: g++ -DQL_CUDA_EMU=1 -x c++ -include emu/cuda_emu.h).
//
// Model: a launch runs the grid's blocks on the calling thread plus a pool of helper threads
// (blocks claimed one at a time; the context's thread count, QL_EMU_STACK_KB sets stack size);
// inside one OS thread a block's threads are cooperative fibers with small stacks (own x86-64
// context switch, no syscalls), so __syncthreads() is a real barrier: a fiber parks and the
// next one runs; when every live thread of the block has arrived the barrier opens. Warp
// collectives (shuffles, votes, __syncwarp) are warp-level rendezvous of the live lanes.
// Shared memory is per block and filled with 0xFF (NaN for floats) before each block, so a
// read of a shared value nobody has written yet (missing barrier, wrong index) shows up.
// QL_EMU_SCHEDULE=reverse runs threads high-to-low between barriers (races hidden by one order
// show in the other); divergent __syncthreads() calls fail the launch (see set_barrier_check).
// Launches and copies are synchronous; streams and events are tokens.
#pragma once
#ifndef QL_CUDA_EMU
#define QL_CUDA_EMU 1
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <unistd.h>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __constant__

// ---------------------------------------------------------------- runtime types
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct int3 {
  int x, y, z;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

typedef int cudaError_t;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum { cudaMemAttachGlobal = 1, cudaCpuDeviceId = -1 };
enum { cudaStreamNonBlocking = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
typedef struct ql_emu_stream_* cudaStream_t;
typedef struct ql_emu_event_* cudaEvent_t;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major, minor;
  int clockRate;
  int memoryClockRate;
  int memoryBusWidth;
  size_t l2CacheSize;
};

cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaMallocManaged(void** p, size_t bytes, unsigned flags = cudaMemAttachGlobal);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* dst, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaMemPrefetchAsync(const void* p, size_t bytes, int device, cudaStream_t s = nullptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
template <class F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

// ---------------------------------------------------------------- the fiber machine
namespace ql_emu {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 1024;
constexpr size_t kStaticShared = 48 * 1024;

struct Fiber;
struct Block;

struct WarpState {
  uint64_t slot[2][kWarp];  // double-buffered exchange values (by phase parity)
  unsigned phase = 0;
  int lanes = 0;            // threads in this warp
};

struct Block {
  dim3 block_idx, grid_dim, block_dim;
  unsigned char* static_shared = nullptr;   // kStaticShared bytes
  unsigned char* dynamic_shared = nullptr;  // launch's dynamic bytes
  size_t dynamic_bytes = 0;
  WarpState warps[kMaxThreads / kWarp];
};

struct Fiber {
  void* sp = nullptr;
  dim3 thread_idx;
  int linear = 0, lane = 0, warp = 0;
  size_t shared_cursor = 0;  // bump pointer of QL_SHARED declarations
  int state = 0;             // see runtime.cpp
  void* barrier_site = nullptr;  // return address of the __syncthreads() it waits in
  unsigned wait_phase = 0;
  Block* block = nullptr;
};

extern thread_local Fiber* t_fiber __attribute__((tls_model("initial-exec")));

// Parks the calling fiber at a block barrier / warp rendezvous.
void block_barrier();
void warp_barrier();
// Per-block static shared memory for one QL_SHARED declaration.
void* shared_static(size_t bytes, size_t align);
void* shared_dynamic();
[[noreturn]] void trap(const char* what);

// Runs body(void) for each thread of each block; returns cudaSuccess or an error.
using KernelBody = void (*)(void* closure);
void set_threads(int n);  // OS threads running blocks (0: OpenMP default)
// Threads of a warp / warps of a block run in reverse order between barriers (initially from
// QL_EMU_SCHEDULE=reverse).
void set_reverse_schedule(bool reverse);
// Barrier checking (on unless QL_EMU_CHECK=0): threads of a block waiting in different
// __syncthreads() calls make the launch fail (cudaErrorLaunchFailure, message on stderr)
// instead of silently matching up (a GPU would hang or corrupt). Call sites are compared, so the
// emulated objects are built without the passes that duplicate code (Makefile EMU_FLAGS).
void set_barrier_check(bool on);
// Last launch error of this OS thread (cudaGetLastError reads and clears it).
cudaError_t& last_error();
cudaError_t launch(dim3 grid, dim3 block, size_t shmem, KernelBody body, void* closure);

template <class... P>
struct Launcher {
  dim3 grid, block;
  size_t shmem;
  void (*kernel)(P...);
  template <class... A>
  void operator()(A&&... args) const {
    struct Closure {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> args;
    } c{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    cudaError_t e = launch(grid, block, shmem,
           [](void* p) {
             auto* cl = static_cast<Closure*>(p);
             std::apply(cl->kernel, cl->args);
           },
           &c);
    if (e != cudaSuccess) last_error() = e;
  }
};
template <class... P>
Launcher<P...> make_launcher(dim3 g, dim3 b, size_t shmem, void (*k)(P...)) {
  return Launcher<P...>{g, b, shmem, k};
}

// Warp exchange: every live lane publishes v, rendezvous, then reads lane src's value.
template <class T>
T exchange(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  Fiber* f = t_fiber;
  WarpState& w = f->block->warps[f->warp];
  const unsigned par = w.phase & 1u;
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  w.slot[par][f->lane] = bits;
  warp_barrier();
  T out;
  uint64_t got = w.slot[par][src < 0 || src >= w.lanes ? f->lane : src];
  memcpy(&out, &got, sizeof(T));
  return out;
}

inline unsigned ballot(bool pred) {
  Fiber* f = t_fiber;
  WarpState& w = f->block->warps[f->warp];
  const unsigned par = w.phase & 1u;
  w.slot[par][f->lane] = pred ? 1 : 0;
  warp_barrier();
  unsigned m = 0;
  for (int l = 0; l < w.lanes; l++)
    if (w.slot[par][l] == 1) m |= 1u << l;
  return m;
}

}  // namespace ql_emu

#define threadIdx (ql_emu::t_fiber->thread_idx)
#define blockIdx (ql_emu::t_fiber->block->block_idx)
#define blockDim (ql_emu::t_fiber->block->block_dim)
#define gridDim (ql_emu::t_fiber->block->grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ql_emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ql_emu::warp_barrier(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() {}
inline int __syncthreads_or(int p) {
  // via the warp-independent path: block barrier around a shared flag
  static thread_local int flag;
  ql_emu::block_barrier();
  if (ql_emu::t_fiber->linear == 0) flag = 0;
  ql_emu::block_barrier();
  if (p) flag = 1;
  ql_emu::block_barrier();
  return flag;
}

template <class T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
  int lane = ql_emu::t_fiber->lane;
  int base = lane & ~(width - 1);
  return ql_emu::exchange(v, base + (src & (width - 1)));
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  int lane = ql_emu::t_fiber->lane;
  int src = lane ^ mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ql_emu::exchange(v, src);
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) {
  int lane = ql_emu::t_fiber->lane;
  int src = lane + int(d);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ql_emu::exchange(v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32) {
  int lane = ql_emu::t_fiber->lane;
  int src = lane - int(d);
  if (src < (lane & ~(width - 1))) src = lane;
  return ql_emu::exchange(v, src);
}
inline unsigned __ballot_sync(unsigned, int p) { return ql_emu::ballot(p != 0); }
inline int __any_sync(unsigned, int p) { return ql_emu::ballot(p != 0) != 0; }
inline int __all_sync(unsigned, int p) {
  ql_emu::Fiber* f = ql_emu::t_fiber;
  int lanes = f->block->warps[f->warp].lanes;
  unsigned full = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  return ql_emu::ballot(p != 0) == full;
}
inline unsigned __activemask() { return 0xffffffffu; }

// ---------------------------------------------------------------- atomics (blocks run in parallel)
inline float atomicAdd(float* p, float v) {
  uint32_t old = __atomic_load_n(reinterpret_cast<uint32_t*>(p), __ATOMIC_RELAXED);
  for (;;) {
    float f;
    memcpy(&f, &old, 4);
    float nf = f + v;
    uint32_t nb;
    memcpy(&nb, &nf, 4);
    if (__atomic_compare_exchange_n(reinterpret_cast<uint32_t*>(p), &old, nb, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
      return f;
  }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicMin(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------- device math intrinsics
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) {
  int u;
  memcpy(&u, &f, 4);
  return u;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(unsigned(v)); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
using std::max;
using std::min;

// ---------------------------------------------------------------- bfloat16
struct __nv_bfloat16 {
  uint16_t x;
  __nv_bfloat16() = default;
  explicit __nv_bfloat16(float f);
  operator float() const {
    uint32_t u = uint32_t(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
};
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.x = uint16_t((u >> 16) | 0x40);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    h.x = uint16_t(u >> 16);
  }
  return h;
}
inline __nv_bfloat16::__nv_bfloat16(float f) : x(__float2bfloat16(f).x) {}
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 h;
  h.x = u;
  return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }

// ---------------------------------------------------------------- WMMA (per-warp emulation)
// Operand fragments (matrix_a / matrix_b) hold the whole 16x16 tile in every lane; accumulator
// fragments hold the lane's 8 elements (row lane/2, columns (lane%2)*8 .. +8). Correct code
// cannot tell: the element order of a fragment is unspecified in CUDA.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment;

template <int M, int N, int K, class T, class Layout>
struct fragment<matrix_a, M, N, K, T, Layout> {
  static_assert(M == 16 && N == 16 && K == 16, "emulated WMMA supports 16x16x16 only");
  static constexpr int num_elements = 256;
  float x[256];  // [row][k], as float (bf16 values are exact in float)
};
template <int M, int N, int K, class T, class Layout>
struct fragment<matrix_b, M, N, K, T, Layout> {
  static_assert(M == 16 && N == 16 && K == 16, "emulated WMMA supports 16x16x16 only");
  static constexpr int num_elements = 256;
  float x[256];  // [k][col]
};
template <int M, int N, int K>
struct fragment<accumulator, M, N, K, float, void> {
  static_assert(M == 16 && N == 16 && K == 16, "emulated WMMA supports 16x16x16 only");
  static constexpr int num_elements = 8;
  float x[8];
};

inline float emu_load(const __nv_bfloat16* p) { return float(*p); }
inline float emu_load(const float* p) { return *p; }

template <class T, class Layout>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, Layout>& f, const T* p,
                             unsigned ldm) {
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < 16; r++)
    for (int k = 0; k < 16; k++) f.x[r * 16 + k] = emu_load(row ? p + size_t(r) * ldm + k : p + size_t(k) * ldm + r);
}
template <class T, class Layout>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, Layout>& f, const T* p,
                             unsigned ldm) {
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int k = 0; k < 16; k++)
    for (int c = 0; c < 16; c++) f.x[k * 16 + c] = emu_load(row ? p + size_t(k) * ldm + c : p + size_t(c) * ldm + k);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
  int lane = ql_emu::t_fiber->lane;
  int r = lane / 2, c0 = (lane % 2) * 8;
  for (int i = 0; i < 8; i++)
    f.x[i] = layout == mem_row_major ? p[size_t(r) * ldm + c0 + i] : p[size_t(c0 + i) * ldm + r];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  int lane = ql_emu::t_fiber->lane;
  int r = lane / 2, c0 = (lane % 2) * 8;
  for (int i = 0; i < 8; i++) {
    if (layout == mem_row_major)
      p[size_t(r) * ldm + c0 + i] = f.x[i];
    else
      p[size_t(c0 + i) * ldm + r] = f.x[i];
  }
  __syncwarp();  // the tile is complete for every lane afterwards (as on hardware, after the warp op)
}
template <class Frag, class T>
inline void fill_fragment(Frag& f, T v) {
  for (int i = 0; i < Frag::num_elements; i++) f.x[i] = float(v);
}
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  int lane = ql_emu::t_fiber->lane;
  int r = lane / 2, c0 = (lane % 2) * 8;
  float out[8];
  for (int i = 0; i < 8; i++) {
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += a.x[r * 16 + k] * b.x[k * 16 + c0 + i];
    out[i] = c.x[i] + s;
  }
  for (int i = 0; i < 8; i++) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda

// ---------------------------------------------------------------- source-level portability macros
// QL_SHARED(type, name, count): a per-block static shared array. QL_DYN_SHARED(type, name):
// the launch's dynamic shared memory. QL_LAUNCH(grid, block, shmem, stream, kernel)(args...).
#define QL_SHARED(T, name, count) \
  T* name = static_cast<T*>(ql_emu::shared_static(sizeof(T) * (count), alignof(T) < 16 ? 16 : alignof(T)))
#define QL_DYN_SHARED(T, name) T* name = static_cast<T*>(ql_emu::shared_dynamic())
#define QL_LAUNCH(grid, block, shmem, stream, ...) ql_emu::make_launcher(dim3(grid), dim3(block), (shmem), __VA_ARGS__)
