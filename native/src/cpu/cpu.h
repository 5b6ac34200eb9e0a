// cpu.h — the CPU backend's internal declarations: context state, the parallel-for helper,
// the frozen 4-bit weight storage, and every function the backend table points at.
#pragma once

#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "backend.h"

namespace ql::cpu {

struct Ctx {
  int threads = 1;
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ + BF16 + VNNI + VBMI available at run time
};

inline Ctx& state(ql_ctx* ctx) { return *static_cast<Ctx*>(ctx->impl); }
inline int threads(ql_ctx* ctx) { return ctx->threads; }

// Host memory for the backend's buffers (ql_alloc, weights). Blocks of 2 MiB and more are
// 2 MiB-aligned and advised as transparent huge pages: their first touch costs one page fault per
// 2 MiB instead of one per 4 KiB (on a virtual machine a fault costs microseconds: a 7B model's
// load spent most of its time faulting pages in), and streaming over the weights in decode walks
// the TLB 512 times less. Smaller blocks are 64-byte aligned. host_free takes either.
void* host_alloc(size_t bytes);
void host_free(void* p);

template <class T>
struct HostAllocator {
  using value_type = T;
  HostAllocator() = default;
  template <class U>
  HostAllocator(const HostAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = host_alloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { host_free(p); }
  friend bool operator==(const HostAllocator&, const HostAllocator&) { return true; }
  friend bool operator!=(const HostAllocator&, const HostAllocator&) { return false; }
};
template <class T>
using HostVector = std::vector<T, HostAllocator<T>>;

// Frozen 4-bit weight, bitsandbytes layout: packed [n/2] (high nibble first), float absmax per
// block, plus the 8-bit double-quant constants when the weight has them (kept so export is exact).
struct QWeight {
  HostVector<uint8_t> packed;
  HostVector<float> absmax;  // dequantized absmax [nb]
  std::vector<uint8_t> qabsmax;
  std::vector<float> absmax2;
  float offset = 0.0f;
};
inline QWeight& qw(const ql_qweight* w) { return *static_cast<QWeight*>(w->impl); }

// Quantization kernels over host arrays (also used by the api layer's weight creation).
void quantize_4bit(uint8_t* packed, float* absmax, const void* x, int32_t x_dtype, uint64_t n,
                   int blocksize, int quant_type, int nthreads, bool avx512);
void dequantize_4bit(float* out, const uint8_t* packed, const float* absmax, uint64_t n,
                     int blocksize, int quant_type, int nthreads);
void quantize_absmax_8bit(uint8_t* qabsmax, float* absmax2, float* offset, const float* absmax,
                          uint64_t nb, int nested_blocksize);
void dequantize_absmax_8bit(float* absmax, const uint8_t* qabsmax, const float* absmax2,
                            float offset, uint64_t nb, int nested_blocksize);

// Every table entry (backend_ops.h), defined across cpu/*.cpp; table.cpp fills the table.
#define QL_OP(ret, op, params) ret op params;
#include "backend_ops.h"

// Host memmove (copy_to_device, copy_to_host and copy_device are all this on the CPU).
ql_status copy(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);

}  // namespace ql::cpu
