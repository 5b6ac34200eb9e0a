// cpu.h — the CPU backend's internal declarations: context state, the parallel-for helper,
// the frozen 4-bit weight storage, and every function the backend table points at.
#pragma once

#include <omp.h>

#include <cstdint>
#include <vector>

#include "backend.h"

namespace ql::cpu {

struct Ctx {
  int threads = 1;
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ + BF16 + VNNI + VBMI available at run time
};

inline Ctx& state(ql_ctx* ctx) { return *static_cast<Ctx*>(ctx->impl); }
inline int threads(ql_ctx* ctx) { return ctx->threads; }

// Frozen 4-bit weight, bitsandbytes layout: packed [n/2] (high nibble first), float absmax per
// block, plus the 8-bit double-quant constants when the weight has them (kept so export is exact).
struct QWeight {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;  // dequantized absmax [nb]
  std::vector<uint8_t> qabsmax;
  std::vector<float> absmax2;
  float offset = 0.0f;
};
inline QWeight& qw(const ql_qweight* w) { return *static_cast<QWeight*>(w->impl); }

// Quantization kernels over host arrays (also used by the api layer's weight creation).
void quantize_4bit(uint8_t* packed, float* absmax, const float* x, uint64_t n, int blocksize,
                   int quant_type, int nthreads);
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
