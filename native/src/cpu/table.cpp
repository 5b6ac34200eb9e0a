// table.cpp — the CPU backend's function table: every op of backend_ops.h, from namespace ql::cpu.
#include "cpu/cpu.h"
#include "cpu/ops.h"
#include "cpu/linalg.h"

namespace ql::cpu {

static const ql_backend kTable = [] {
  ql_backend t{};
  t.name = "cpu";
#define QL_OP(ret, op, params) t.op = op;
#include "backend_ops.h"
  return t;
}();

}  // namespace ql::cpu

const ql_backend* ql_backend_table() { return &ql::cpu::kTable; }
