// table.cpp — the CPU backend's function table. Entries left NULL answer QL_E_UNSUPPORTED.
#include "cpu/cpu.h"
#include "cpu/ops.h"
#include "cpu/linalg.h"

namespace ql::cpu {

static ql_status copy_to_device(ql_ctx* c, void* d, const void* s, uint64_t n) { return copy(c, d, s, n); }

static const ql_backend kTable = [] {
  ql_backend t{};
  t.name = "cpu";
  t.ctx_init = ctx_init;
  t.ctx_fini = ctx_fini;
  t.describe = describe;
  t.sync = sync;
  t.alloc = alloc;
  t.free = free_;
  t.copy_to_device = copy_to_device;
  t.copy_to_host = copy_to_device;
  t.copy_device = copy_to_device;
  t.fill_zero = fill_zero;
  t.convert = convert;
  t.quantize_4bit = quantize_4bit_entry;
  t.dequantize_4bit = dequantize_4bit_entry;
  t.quantize_absmax_8bit = quantize_absmax_8bit_entry;
  t.dequantize_absmax_8bit = dequantize_absmax_8bit_entry;
  t.qweight_quantize = qweight_quantize;
  t.qweight_import = qweight_import;
  t.qweight_export = qweight_export;
  t.qweight_bytes = qweight_bytes;
  t.qweight_dequantize = qweight_dequantize;
  t.qweight_free = qweight_free;
  t.embedding_forward = embedding_forward;
  t.embedding_backward = embedding_backward;
  t.rmsnorm_forward = rmsnorm_forward;
  t.rmsnorm_backward = rmsnorm_backward;
  t.rope_forward = rope_forward;
  t.rope_backward = rope_backward;
  t.kv_cache_write = kv_cache_write;
  t.attention_paged = attention_paged;
  t.attention_forward = attention_forward;
  t.attention_backward = attention_backward;
  t.silu_mul_forward = silu_mul_forward;
  t.silu_mul_backward = silu_mul_backward;
  t.add = add;
  t.cross_entropy = cross_entropy;
  t.sum_squares = sum_squares;
  t.scale = scale;
  t.topk = topk;
  t.matmul_4bit = matmul_4bit;
  t.matmul_4bit_backward = matmul_4bit_backward;
  t.gemm = gemm;
  t.lora_forward = lora_forward;
  t.lora_backward = lora_backward;
  t.lora_multi_forward = lora_multi_forward;
  t.optimizer_init = optimizer_init;
  t.optimizer_add = optimizer_add;
  t.optimizer_size = optimizer_size;
  t.optimizer_step = optimizer_step;
  t.optimizer_get_state = optimizer_get_state;
  t.optimizer_set_state = optimizer_set_state;
  t.optimizer_memory = optimizer_memory;
  t.optimizer_free = optimizer_free;
  return t;
}();

}  // namespace ql::cpu

const ql_backend* ql_backend_table() { return &ql::cpu::kTable; }
