// checks.h — argument validation helpers for the api/ layer. Every public function checks its
// arguments here before a backend sees them, so backends may trust their inputs.
#pragma once

#include <cstdio>
#include <new>
#include <stdexcept>

#include "api/handles.h"
#include "backend.h"

#define QL_CHECK(cond, ...)                            \
  do {                                                 \
    if (!(cond)) return ql_fail(QL_E_INVALID, __VA_ARGS__); \
  } while (0)

// Runs body, turning C++ exceptions into a status (no exception crosses the C boundary).
#define QL_GUARD(...)                                                           \
  try {                                                                         \
    __VA_ARGS__                                                                 \
  } catch (const std::bad_alloc&) {                                             \
    return ql_fail(QL_E_OOM, "%s: out of memory", __func__);                    \
  } catch (const std::exception& e) {                                           \
    return ql_fail(QL_E_INTERNAL, "%s: %s", __func__, e.what());                \
  } catch (...) {                                                               \
    return ql_fail(QL_E_INTERNAL, "%s: unknown exception", __func__);           \
  }

// Calls a backend entry, or answers QL_E_UNSUPPORTED when the backend leaves it NULL.
#define QL_CALL(ctx, fn, ...)                                                            \
  ((ctx)->be->fn ? (ctx)->be->fn(__VA_ARGS__)                                            \
                 : ql_fail(QL_E_UNSUPPORTED, "%s is not implemented by the %s backend", \
                           #fn, (ctx)->be->name))

// Handle checks: NULL, then the magic (one load and compare), then for weights and optimizers
// that their context is still the one they were made on. See api/handles.h.
#define QL_CHECK_CTX(ctx)                                                                        \
  do {                                                                                           \
    QL_CHECK((ctx) != nullptr, "%s: ctx is NULL", __func__);                                     \
    QL_CHECK(ql::ctx_live(ctx), "%s: ctx is not a live ql_ctx (destroyed, or not a context)", __func__); \
  } while (0)
#define QL_CHECK_CHILD(h, kind_magic, type)                                                              \
  do {                                                                                              \
    QL_CHECK((h) != nullptr, "%s: %s is NULL", __func__, #h);                                       \
    QL_CHECK((h)->magic == (kind_magic), "%s: %s is not a live " type " (destroyed, or not a " type ")", \
             __func__, #h);                                                                         \
    QL_CHECK(ql::parent_live(h), "%s: the context of %s was destroyed", __func__, #h);              \
  } while (0)
#define QL_CHECK_QWEIGHT(w) QL_CHECK_CHILD(w, kQWeightMagic, "ql_qweight")
#define QL_CHECK_OPT(opt) QL_CHECK_CHILD(opt, kOptimizerMagic, "ql_optimizer")
#define QL_CHECK_PTR(p) QL_CHECK((p) != nullptr, "%s: %s is NULL", __func__, #p)
#define QL_CHECK_POS(v) QL_CHECK((v) > 0, "%s: %s must be > 0 (got %lld)", __func__, #v, (long long)(v))
#define QL_CHECK_NONNEG(v) QL_CHECK((v) >= 0, "%s: %s must be >= 0 (got %lld)", __func__, #v, (long long)(v))
#define QL_CHECK_ACT_DTYPE(d)                                                                \
  QL_CHECK((d) == QL_F32 || (d) == QL_BF16, "%s: %s must be QL_F32 (0) or QL_BF16 (1) (got %d)", \
           __func__, #d, (int)(d))
#define QL_CHECK_FINITE(x) QL_CHECK((x) == (x) && (x) - (x) == 0, "%s: %s must be finite", __func__, #x)

namespace ql {

// Bytes per element of a dtype, 0 for an unknown one.
inline size_t dtype_size(int32_t dtype) {
  switch (dtype) {
    case QL_F32: return 4;
    case QL_BF16: return 2;
    case QL_F16: return 2;
    case QL_U8: return 1;
    case QL_I32: return 4;
    default: return 0;
  }
}

// *out = a * b; false when the product overflows int64 (no wrap, no UB). Every product of
// caller-given sizes in the checks goes through this (or QL_CHECK_NUMEL / QL_CHECK_MUL).
inline bool mul_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

constexpr int64_t kMaxElements = int64_t(1) << 40;  // 1 Ti elements: guards size overflow
// Most sequences in one paged-attention call (its host arrays are read before any size
// relates S to the batch; this bounds how far those reads go).
constexpr int64_t kMaxSequences = int64_t(1) << 20;

}  // namespace ql

// Declares `int64_t out = a * b` for sizes already checked >= 0; fails the call when the product
// overflows or passes kMaxElements.
#define QL_CHECK_MUL(out, a, b)                                                                 \
  int64_t out = 0;                                                                              \
  QL_CHECK(ql::mul_ok((a), (b), &out) && out <= ql::kMaxElements, "%s: %s * %s is too large", \
           __func__, #a, #b)

// Checks that a product of sizes stays below kMaxElements.
#define QL_CHECK_NUMEL(...)                                                                \
  do {                                                                                     \
    int64_t _dims[] = {__VA_ARGS__};                                                       \
    int64_t _n = 1;                                                                        \
    for (int64_t _d : _dims) {                                                             \
      QL_CHECK(_d >= 0, "%s: negative size", __func__);                                    \
      QL_CHECK(ql::mul_ok(_n, _d, &_n) && _n <= ql::kMaxElements, "%s: sizes too large (%s)", \
               __func__, #__VA_ARGS__);                                                    \
    }                                                                                      \
  } while (0)
