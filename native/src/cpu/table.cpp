// table.cpp — the CPU backend's function table. Entries left NULL answer QL_E_UNSUPPORTED.
#include "cpu/cpu.h"

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
  return t;
}();

}  // namespace ql::cpu

const ql_backend* ql_backend_table() { return &ql::cpu::kTable; }
