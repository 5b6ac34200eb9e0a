// context.cpp — CPU context (thread count, ISA detection), memory and dtype conversion.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/half.h"
#include "cpu/cpu.h"

namespace ql::cpu {

static bool detect_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512vbmi");
}

ql_status ctx_init(ql_ctx* ctx, int32_t n_threads, int32_t device) {
  auto* s = new Ctx();
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  s->threads = n_threads > 0 ? n_threads : int(online > 0 ? online : 1);
  // QLORA_FORCE_AVX2=1 runs the AVX2 paths on an AVX-512 machine (for tests and benchmarks).
  const char* force = getenv("QLORA_FORCE_AVX2");
  s->avx512 = detect_avx512() && !(force && force[0] == '1');
  ctx->impl = s;
  ctx->threads = s->threads;
  return QL_OK;
}

void ctx_fini(ql_ctx* ctx) { delete static_cast<Ctx*>(ctx->impl); }

ql_status describe(ql_ctx* ctx, std::string* json) {
  const Ctx& s = state(ctx);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  *json = std::string("{\"backend\":\"cpu\",\"threads\":") + std::to_string(s.threads) +
          ",\"isa\":\"" + (s.avx512 ? "avx512" : "avx2") + "\",\"device\":\"host\"" +
          ",\"memory_bytes\":" + std::to_string((long long)pages * page) + "}";
  return QL_OK;
}

ql_status sync(ql_ctx*) { return QL_OK; }

void* host_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes >= kHuge) {
    const size_t rounded = (bytes + kHuge - 1) & ~(kHuge - 1);
    void* p = nullptr;
    if (posix_memalign(&p, kHuge, rounded) != 0) return nullptr;
    (void)madvise(p, rounded, MADV_HUGEPAGE);  // advice: without THP it is ignored
    return p;
  }
  return std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) & ~size_t(63));
}

void host_free(void* p) { std::free(p); }

ql_status alloc(ql_ctx*, uint64_t bytes, void** out) {
  void* p = host_alloc(size_t(bytes));
  if (!p) return ql_fail(QL_E_OOM, "ql_alloc: cannot allocate %llu bytes", (unsigned long long)bytes);
  *out = p;
  return QL_OK;
}

ql_status free_(ql_ctx*, void* ptr) {
  host_free(ptr);
  return QL_OK;
}

ql_status copy(ql_ctx*, void* dst, const void* src, uint64_t bytes) {
  if (dst != src) memmove(dst, src, bytes);
  return QL_OK;
}

ql_status copy_to_device(ql_ctx* c, void* d, const void* s, uint64_t n) { return copy(c, d, s, n); }
ql_status copy_to_host(ql_ctx* c, void* d, const void* s, uint64_t n) { return copy(c, d, s, n); }
ql_status copy_device(ql_ctx* c, void* d, const void* s, uint64_t n) { return copy(c, d, s, n); }

ql_status fill_zero(ql_ctx*, void* dst, uint64_t bytes) {
  memset(dst, 0, bytes);
  return QL_OK;
}

ql_status convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in, int32_t in_dtype,
                  int64_t n) {
  if (out_dtype == in_dtype) return copy(ctx, out, in, uint64_t(n) * (in_dtype == QL_F32 ? 4 : 2));
#pragma omp parallel for num_threads(threads(ctx)) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) store_from_f32(out, out_dtype, i, load_as_f32(in, in_dtype, i));
  return QL_OK;
}

}  // namespace ql::cpu
