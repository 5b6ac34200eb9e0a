// checks.h — argument validation helpers for the api/ layer. Every public function checks its
// arguments here before a backend sees them, so backends may trust their inputs.
#pragma once

#include <cstdio>
#include <new>
#include <stdexcept>

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

#define QL_CHECK_CTX(ctx) QL_CHECK((ctx) != nullptr && (ctx)->be != nullptr, "%s: ctx is NULL", __func__)
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

// a * b with overflow check, for element counts (each factor checked >= 0 before).
inline bool mul_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

constexpr int64_t kMaxElements = int64_t(1) << 40;  // 1 Ti elements: guards size overflow

}  // namespace ql

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
