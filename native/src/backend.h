// backend.h — the internal table of functions each backend fills.
//
// The api/ layer (shared by every backend) validates all arguments, turns C++ exceptions into
// statuses and then calls through this table; a backend function may assume its arguments
// passed the checks written in qlora.h. A NULL entry answers QL_E_UNSUPPORTED.
// The entries are listed once, in backend_ops.h.
// Each shared library links api/ + exactly one backend, which defines ql_backend_table().
#pragma once

#include <cstdint>
#include <string>

#include "../include/qlora.h"

struct ql_backend;

// Handle tags. Each handle starts with its kind's magic while it is live; destroy overwrites it
// with kDeadMagic before releasing anything, and the api layer (api/handles.h) recycles handle
// memory instead of returning it to the heap, so a stale handle still points at readable memory
// whose magic says it is dead. `generation` counts how often a slot was destroyed: a weight or
// optimizer remembers its context's generation and so notices a destroyed (or recycled) context.
constexpr uint32_t kCtxMagic = 0x58544351u;        // "QCTX"
constexpr uint32_t kQWeightMagic = 0x54575151u;    // "QQWT"
constexpr uint32_t kOptimizerMagic = 0x54504f51u;  // "QOPT"
constexpr uint32_t kDeadMagic = 0xdeadd00du;

struct ql_ctx {
  uint32_t magic = kCtxMagic;
  uint32_t generation = 0;
  const ql_backend* be = nullptr;
  void* impl = nullptr;  // backend state (thread pool, stream, allocator)
  int32_t threads = 1;
};

// Metadata is common; storage lives in impl, owned by the backend.
struct ql_qweight {
  uint32_t magic = kQWeightMagic;
  uint32_t generation = 0;
  uint32_t ctx_generation = 0;  // ctx->generation when this weight was made
  ql_ctx* ctx = nullptr;
  int64_t rows = 0, cols = 0;
  int32_t quant_type = 0, blocksize = 64, double_quant = 0, nested_blocksize = 256;
  void* impl = nullptr;
  uint64_t n() const { return uint64_t(rows) * uint64_t(cols); }
  uint64_t nblocks() const { return (n() + blocksize - 1) / blocksize; }
  uint64_t nblocks2() const { return (nblocks() + nested_blocksize - 1) / nested_blocksize; }
};

struct ql_optimizer {
  uint32_t magic = kOptimizerMagic;
  uint32_t generation = 0;
  uint32_t ctx_generation = 0;  // ctx->generation when this optimizer was made
  ql_ctx* ctx = nullptr;
  int32_t kind = 0;
  uint64_t budget_bytes = 0;
  std::string spill_dir;
  void* impl = nullptr;
};

// Records a message for ql_last_error() and returns the status (printf-style).
ql_status ql_fail(ql_status status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

struct ql_backend {
  const char* name;
#define QL_OP(ret, op, params) ret(*op) params;
#include "backend_ops.h"
};

// Defined by the backend linked into this library.
const ql_backend* ql_backend_table();
