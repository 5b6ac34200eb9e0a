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

// Table entries, defined across cpu/*.cpp (see table.cpp).
ql_status ctx_init(ql_ctx* ctx, int32_t n_threads, int32_t device);
void ctx_fini(ql_ctx* ctx);
ql_status describe(ql_ctx* ctx, std::string* json);
ql_status sync(ql_ctx* ctx);
ql_status alloc(ql_ctx* ctx, uint64_t bytes, void** out);
ql_status free_(ql_ctx* ctx, void* ptr);
ql_status copy(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes);
ql_status fill_zero(ql_ctx* ctx, void* dst, uint64_t bytes);
ql_status convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in, int32_t in_dtype,
                  int64_t n);

ql_status quantize_4bit_entry(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x,
                              uint64_t n, int32_t blocksize, int32_t quant_type);
ql_status dequantize_4bit_entry(ql_ctx* ctx, float* out, const uint8_t* packed,
                                const float* absmax, uint64_t n, int32_t blocksize,
                                int32_t quant_type);
ql_status quantize_absmax_8bit_entry(ql_ctx* ctx, uint8_t* qabsmax, float* absmax2,
                                     float* offset, const float* absmax, uint64_t nb,
                                     int32_t nested_blocksize);
ql_status dequantize_absmax_8bit_entry(ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
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

}  // namespace ql::cpu
