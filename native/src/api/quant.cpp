// quant.cpp — blockwise 4-bit / 8-bit quantization and frozen 4-bit weights.
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "api/checks.h"
#include "common/half.h"
#include "common/quant_math.h"

namespace {

bool valid_blocksize(int64_t bs) {
  return bs >= ql::kMinBlocksize && bs <= ql::kMaxBlocksize && (bs & (bs - 1)) == 0;
}
bool valid_quant_type(int32_t qt) { return qt == QL_NF4 || qt == QL_FP4 || qt == QL_INT4; }

}  // namespace

#define QL_CHECK_BLOCKSIZE(bs) \
  QL_CHECK(valid_blocksize(bs), "%s: blocksize must be a power of two in [32, 4096] (got %d)", __func__, (int)(bs))
#define QL_CHECK_QTYPE(qt) \
  QL_CHECK(valid_quant_type(qt), "%s: quant_type must be NF4 (0), FP4 (1) or INT4 (2) (got %d)", __func__, (int)(qt))

extern "C" {

QL_API ql_status ql_codebook(int32_t quant_type, float* host_out16) {
  QL_CHECK_QTYPE(quant_type);
  QL_CHECK_PTR(host_out16);
  memcpy(host_out16, ql::codebook(quant_type).value, 16 * sizeof(float));
  return QL_OK;
}

QL_API ql_status ql_dynamic_map(float* host_out256) {
  QL_CHECK_PTR(host_out256);
  memcpy(host_out256, ql::dynamic_map().value, 256 * sizeof(float));
  return QL_OK;
}

QL_API ql_status ql_quantize_4bit(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x,
                                  uint64_t n, int32_t blocksize, int32_t quant_type) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_BLOCKSIZE(blocksize);
  QL_CHECK_QTYPE(quant_type);
  QL_CHECK(n > 0 && n <= uint64_t(ql::kMaxElements), "ql_quantize_4bit: n must be in [1, 2^40]");
  QL_CHECK_PTR(packed);
  QL_CHECK_PTR(absmax);
  QL_CHECK_PTR(x);
  QL_GUARD(return QL_CALL(ctx, quantize_4bit, ctx, packed, absmax, x, n, blocksize, quant_type);)
}

QL_API ql_status ql_dequantize_4bit(ql_ctx* ctx, float* out, const uint8_t* packed,
                                    const float* absmax, uint64_t n, int32_t blocksize,
                                    int32_t quant_type) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_BLOCKSIZE(blocksize);
  QL_CHECK_QTYPE(quant_type);
  QL_CHECK(n > 0 && n <= uint64_t(ql::kMaxElements), "ql_dequantize_4bit: n must be in [1, 2^40]");
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(packed);
  QL_CHECK_PTR(absmax);
  QL_GUARD(return QL_CALL(ctx, dequantize_4bit, ctx, out, packed, absmax, n, blocksize, quant_type);)
}

QL_API ql_status ql_quantize_absmax_8bit(ql_ctx* ctx, uint8_t* qabsmax, float* absmax2,
                                         float* offset, const float* absmax, uint64_t nb,
                                         int32_t nested_blocksize) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_BLOCKSIZE(nested_blocksize);
  QL_CHECK(nb > 0 && nb <= uint64_t(ql::kMaxElements), "ql_quantize_absmax_8bit: nb must be in [1, 2^40]");
  QL_CHECK_PTR(qabsmax);
  QL_CHECK_PTR(absmax2);
  QL_CHECK_PTR(offset);
  QL_CHECK_PTR(absmax);
  QL_GUARD(return QL_CALL(ctx, quantize_absmax_8bit, ctx, qabsmax, absmax2, offset, absmax, nb,
                          nested_blocksize);)
}

QL_API ql_status ql_dequantize_absmax_8bit(ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
                                           const float* absmax2, const float* offset,
                                           uint64_t nb, int32_t nested_blocksize) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_BLOCKSIZE(nested_blocksize);
  QL_CHECK(nb > 0 && nb <= uint64_t(ql::kMaxElements), "ql_dequantize_absmax_8bit: nb must be in [1, 2^40]");
  QL_CHECK_PTR(absmax);
  QL_CHECK_PTR(qabsmax);
  QL_CHECK_PTR(absmax2);
  QL_CHECK_PTR(offset);
  QL_GUARD(return QL_CALL(ctx, dequantize_absmax_8bit, ctx, absmax, qabsmax, absmax2, offset, nb,
                          nested_blocksize);)
}

static ql_status check_weight_shape(int64_t rows, int64_t cols, int32_t quant_type,
                                    int32_t blocksize) {
  QL_CHECK(rows > 0 && cols > 0, "ql_qweight: rows and cols must be > 0 (got %lld x %lld)",
           (long long)rows, (long long)cols);
  QL_CHECK_NUMEL(rows, cols);
  QL_CHECK_QTYPE(quant_type);
  QL_CHECK_BLOCKSIZE(blocksize);
  return QL_OK;
}

QL_API ql_status ql_qweight_quantize(ql_ctx* ctx, const void* host_w, int32_t w_dtype,
                                     int64_t rows, int64_t cols, int32_t quant_type,
                                     int32_t blocksize, int32_t double_quant, ql_qweight** out) {
  QL_CHECK_PTR(out);
  *out = nullptr;
  QL_CHECK_CTX(ctx);
  QL_CHECK_PTR(host_w);
  ql_status st = check_weight_shape(rows, cols, quant_type, blocksize);
  if (st != QL_OK) return st;
  QL_CHECK(w_dtype == QL_F32 || w_dtype == QL_BF16 || w_dtype == QL_F16,
           "ql_qweight_quantize: w_dtype must be F32, BF16 or F16 (got %d)", w_dtype);
  QL_CHECK(double_quant == 0 || double_quant == 1, "ql_qweight_quantize: double_quant must be 0 or 1");
  QL_GUARD({
    ql::HandleOwner<ql_qweight> w(ql::handle_new<ql_qweight>());
    w->ctx = ctx;
    w->ctx_generation = ctx->generation;
    w->rows = rows;
    w->cols = cols;
    w->quant_type = quant_type;
    w->blocksize = blocksize;
    w->double_quant = double_quant;
    w->nested_blocksize = 256;
    ql_status s = QL_CALL(ctx, qweight_quantize, ctx, w.get(), host_w, w_dtype);
    if (s != QL_OK) return s;
    *out = w.release();
    return QL_OK;
  })
}

QL_API ql_status ql_qweight_import(ql_ctx* ctx, int64_t rows, int64_t cols, int32_t quant_type,
                                   int32_t blocksize, const uint8_t* host_packed,
                                   const float* host_absmax, const uint8_t* host_qabsmax,
                                   const float* host_absmax2, float offset,
                                   int32_t nested_blocksize, const float* host_code,
                                   ql_qweight** out) {
  QL_CHECK_PTR(out);
  *out = nullptr;
  QL_CHECK_CTX(ctx);
  ql_status st = check_weight_shape(rows, cols, quant_type, blocksize);
  if (st != QL_OK) return st;
  QL_CHECK_PTR(host_packed);
  QL_CHECK_PTR(host_code);
  bool dq = host_qabsmax != nullptr;
  if (dq) {
    QL_CHECK(host_absmax == nullptr, "ql_qweight_import: give host_absmax or host_qabsmax, not both");
    QL_CHECK_PTR(host_absmax2);
    QL_CHECK_BLOCKSIZE(nested_blocksize);
    QL_CHECK_FINITE(offset);
  } else {
    QL_CHECK(host_absmax != nullptr, "ql_qweight_import: host_absmax is NULL (and no double quant given)");
    QL_CHECK(host_absmax2 == nullptr, "ql_qweight_import: host_absmax2 given without host_qabsmax");
  }
  const ql::Codebook& cb = ql::codebook(quant_type);
  for (int i = 0; i < 16; i++) {
    QL_CHECK(std::fabs(host_code[i] - cb.value[i]) <= 1e-6f,
             "ql_qweight_import: quant_map[%d] = %g differs from the %s codebook (%g)", i,
             host_code[i], quant_type == QL_NF4 ? "nf4" : quant_type == QL_FP4 ? "fp4" : "int4",
             cb.value[i]);
  }
  QL_GUARD({
    ql::HandleOwner<ql_qweight> w(ql::handle_new<ql_qweight>());
    w->ctx = ctx;
    w->ctx_generation = ctx->generation;
    w->rows = rows;
    w->cols = cols;
    w->quant_type = quant_type;
    w->blocksize = blocksize;
    w->double_quant = dq ? 1 : 0;
    w->nested_blocksize = dq ? nested_blocksize : 256;
    const uint64_t nb = w->nblocks();
    std::vector<float> absmax;
    if (dq) {  // the backend always gets float absmax; it keeps the 8-bit form too
      const ql::DynamicMap& dyn = ql::dynamic_map();
      absmax.resize(nb);
      for (uint64_t b = 0; b < nb; b++)
        absmax[b] = ql::dequant_absmax(dyn.value, host_qabsmax[b], host_absmax2[b / nested_blocksize], offset);
      host_absmax = absmax.data();
    }
    for (uint64_t b = 0; b < nb; b++)
      QL_CHECK(std::isfinite(host_absmax[b]), "ql_qweight_import: absmax[%llu] is not finite",
               (unsigned long long)b);
    ql_status s = QL_CALL(ctx, qweight_import, ctx, w.get(), host_packed, host_absmax,
                          host_qabsmax, host_absmax2, offset);
    if (s != QL_OK) return s;
    *out = w.release();
    return QL_OK;
  })
}

QL_API ql_status ql_qweight_export(ql_ctx* ctx, const ql_qweight* w, uint8_t* host_packed,
                                   float* host_absmax, uint8_t* host_qabsmax,
                                   float* host_absmax2, float* host_offset) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_QWEIGHT(w);
  QL_CHECK(w->ctx == ctx, "ql_qweight_export: the weight belongs to another context");
  if (!w->double_quant)
    QL_CHECK(!host_qabsmax && !host_absmax2 && !host_offset,
             "ql_qweight_export: the weight has no double quantization; pass NULL for its parts");
  QL_GUARD(return QL_CALL(ctx, qweight_export, ctx, w, host_packed, host_absmax, host_qabsmax,
                          host_absmax2, host_offset);)
}

QL_API ql_status ql_qweight_info(const ql_qweight* w, int64_t* host_out8) {
  QL_CHECK_QWEIGHT(w);
  QL_CHECK_PTR(host_out8);
  int64_t bytes[2] = {0, 0};
  QL_GUARD({
    ql_status st = QL_CALL(w->ctx, qweight_bytes, w, bytes);
    if (st != QL_OK) return st;
  })
  host_out8[0] = w->rows;
  host_out8[1] = w->cols;
  host_out8[2] = w->quant_type;
  host_out8[3] = w->blocksize;
  host_out8[4] = w->double_quant;
  host_out8[5] = w->nested_blocksize;
  host_out8[6] = bytes[0];
  host_out8[7] = bytes[1];
  return QL_OK;
}

QL_API ql_status ql_qweight_dequantize(ql_ctx* ctx, void* out, const ql_qweight* w, int32_t dtype) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_QWEIGHT(w);
  QL_CHECK_PTR(out);
  QL_CHECK(w->ctx == ctx, "ql_qweight_dequantize: the weight belongs to another context");
  QL_CHECK_ACT_DTYPE(dtype);
  QL_GUARD(return QL_CALL(ctx, qweight_dequantize, ctx, out, w, dtype);)
}

QL_API void ql_qweight_destroy(ql_qweight* w) {
  if (!w) return;
  if (w->magic != kQWeightMagic) {  // destroyed twice, or not a weight: nothing to free
    ql_fail(QL_E_INVALID, "ql_qweight_destroy: w is not a live ql_qweight (destroyed, or not a ql_qweight)");
    return;
  }
  w->magic = kDeadMagic;
  // After its context is gone the backend storage went with it (or cannot be reached): skip it.
  if (ql::parent_live(w)) {
    try {
      if (w->ctx->be->qweight_free) w->ctx->be->qweight_free(w);
    } catch (...) {
    }
  }
  ql::handle_release(w);
}

QL_API ql_status ql_matmul_4bit(ql_ctx* ctx, void* y, const void* x, const ql_qweight* w,
                                int64_t m, int32_t dtype, int32_t accumulate) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_QWEIGHT(w);
  QL_CHECK(w->ctx == ctx, "ql_matmul_4bit: the weight belongs to another context");
  QL_CHECK_POS(m);
  QL_CHECK_NUMEL(m, w->cols);
  QL_CHECK_NUMEL(m, w->rows);
  QL_CHECK_PTR(y);
  QL_CHECK_PTR(x);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_CHECK(accumulate == 0 || accumulate == 1, "ql_matmul_4bit: accumulate must be 0 or 1");
  QL_GUARD(return QL_CALL(ctx, matmul_4bit, ctx, y, x, w, m, dtype, accumulate);)
}

QL_API ql_status ql_matmul_4bit_backward(ql_ctx* ctx, void* dx, const void* dy,
                                         const ql_qweight* w, int64_t m, int32_t dtype,
                                         int32_t accumulate) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_QWEIGHT(w);
  QL_CHECK(w->ctx == ctx, "ql_matmul_4bit_backward: the weight belongs to another context");
  QL_CHECK_POS(m);
  QL_CHECK_NUMEL(m, w->cols);
  QL_CHECK_NUMEL(m, w->rows);
  QL_CHECK_PTR(dx);
  QL_CHECK_PTR(dy);
  QL_CHECK_ACT_DTYPE(dtype);
  QL_CHECK(accumulate == 0 || accumulate == 1, "ql_matmul_4bit_backward: accumulate must be 0 or 1");
  QL_GUARD(return QL_CALL(ctx, matmul_4bit_backward, ctx, dx, dy, w, m, dtype, accumulate);)
}

QL_API ql_status ql_gemm(ql_ctx* ctx, void* c, int32_t c_dtype, const void* a, int32_t a_dtype,
                         const void* b, int32_t b_dtype, int64_t m, int64_t n, int64_t k,
                         int32_t trans_a, int32_t trans_b, float alpha, float beta) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_POS(m);
  QL_CHECK_POS(n);
  QL_CHECK_POS(k);
  QL_CHECK_NUMEL(m, k);
  QL_CHECK_NUMEL(k, n);
  QL_CHECK_NUMEL(m, n);
  QL_CHECK_PTR(c);
  QL_CHECK_PTR(a);
  QL_CHECK_PTR(b);
  QL_CHECK_ACT_DTYPE(c_dtype);
  QL_CHECK_ACT_DTYPE(a_dtype);
  QL_CHECK_ACT_DTYPE(b_dtype);
  QL_CHECK((trans_a == 0 || trans_a == 1) && (trans_b == 0 || trans_b == 1),
           "ql_gemm: trans_a and trans_b must be 0 or 1");
  QL_CHECK_FINITE(alpha);
  QL_CHECK_FINITE(beta);
  QL_GUARD(return QL_CALL(ctx, gemm, ctx, c, c_dtype, a, a_dtype, b, b_dtype, m, n, k, trans_a,
                          trans_b, alpha, beta);)
}

}  // extern "C"
