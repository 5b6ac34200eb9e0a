// core.cpp — library identity, errors, contexts and memory.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <string>

#include "api/checks.h"

namespace {
thread_local std::string t_last_error;
}

ql_status ql_fail(ql_status status, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  t_last_error = buf;
  return status;
}

extern "C" {

QL_API uint32_t ql_abi_version(void) { return QL_ABI_VERSION; }
QL_API const char* ql_backend_name(void) { return ql_backend_table()->name; }
QL_API const char* ql_last_error(void) { return t_last_error.c_str(); }

QL_API ql_status ql_ctx_create(int32_t n_threads, int32_t device, ql_ctx** out) {
  QL_CHECK_PTR(out);
  *out = nullptr;
  QL_CHECK(n_threads <= 4096, "ql_ctx_create: n_threads %d is too large", n_threads);
  QL_CHECK(device >= 0, "ql_ctx_create: device must be >= 0 (got %d)", device);
  QL_GUARD({
    ql::HandleOwner<ql_ctx> ctx(ql::handle_new<ql_ctx>());
    ctx->be = ql_backend_table();
    ql_status st = ctx->be->ctx_init(ctx.get(), n_threads, device);
    if (st != QL_OK) return st;
    *out = ctx.release();
    return QL_OK;
  })
}

QL_API void ql_ctx_destroy(ql_ctx* ctx) {
  if (!ctx) return;
  if (!ql::ctx_live(ctx)) {  // destroyed twice, or not a context: nothing to free
    ql_fail(QL_E_INVALID, "ql_ctx_destroy: ctx is not a live ql_ctx (destroyed, or not a context)");
    return;
  }
  ctx->magic = kDeadMagic;
  try {
    ctx->be->ctx_fini(ctx);
  } catch (...) {
  }
  ql::handle_release(ctx);
}

QL_API ql_status ql_ctx_describe(ql_ctx* ctx, char* buf, uint64_t cap) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_PTR(buf);
  QL_GUARD({
    std::string json;
    ql_status st = QL_CALL(ctx, describe, ctx, &json);
    if (st != QL_OK) return st;
    QL_CHECK(json.size() + 1 <= cap, "ql_ctx_describe: buffer of %llu bytes is too small (%zu needed)",
             (unsigned long long)cap, json.size() + 1);
    memcpy(buf, json.c_str(), json.size() + 1);
    return QL_OK;
  })
}

QL_API ql_status ql_sync(ql_ctx* ctx) {
  QL_CHECK_CTX(ctx);
  QL_GUARD(return QL_CALL(ctx, sync, ctx);)
}

QL_API ql_status ql_alloc(ql_ctx* ctx, uint64_t bytes, void** out) {
  QL_CHECK_PTR(out);
  *out = nullptr;
  QL_CHECK_CTX(ctx);
  QL_CHECK(bytes > 0, "ql_alloc: bytes must be > 0");
  QL_CHECK(bytes <= (uint64_t(1) << 46), "ql_alloc: %llu bytes is beyond any device",
           (unsigned long long)bytes);
  QL_GUARD(return QL_CALL(ctx, alloc, ctx, bytes, out);)
}

QL_API ql_status ql_free(ql_ctx* ctx, void* ptr) {
  QL_CHECK_CTX(ctx);
  if (!ptr) return QL_OK;
  QL_GUARD(return QL_CALL(ctx, free_, ctx, ptr);)
}

QL_API ql_status ql_copy_to_device(ql_ctx* ctx, void* dst, const void* host_src, uint64_t bytes) {
  QL_CHECK_CTX(ctx);
  if (bytes == 0) return QL_OK;
  QL_CHECK_PTR(dst);
  QL_CHECK_PTR(host_src);
  QL_GUARD(return QL_CALL(ctx, copy_to_device, ctx, dst, host_src, bytes);)
}

QL_API ql_status ql_copy_to_host(ql_ctx* ctx, void* host_dst, const void* src, uint64_t bytes) {
  QL_CHECK_CTX(ctx);
  if (bytes == 0) return QL_OK;
  QL_CHECK_PTR(host_dst);
  QL_CHECK_PTR(src);
  QL_GUARD(return QL_CALL(ctx, copy_to_host, ctx, host_dst, src, bytes);)
}

QL_API ql_status ql_copy_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes) {
  QL_CHECK_CTX(ctx);
  if (bytes == 0) return QL_OK;
  QL_CHECK_PTR(dst);
  QL_CHECK_PTR(src);
  QL_GUARD(return QL_CALL(ctx, copy_device, ctx, dst, src, bytes);)
}

QL_API ql_status ql_fill_zero(ql_ctx* ctx, void* dst, uint64_t bytes) {
  QL_CHECK_CTX(ctx);
  if (bytes == 0) return QL_OK;
  QL_CHECK_PTR(dst);
  QL_GUARD(return QL_CALL(ctx, fill_zero, ctx, dst, bytes);)
}

QL_API ql_status ql_convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in,
                            int32_t in_dtype, int64_t n) {
  QL_CHECK_CTX(ctx);
  QL_CHECK_NONNEG(n);
  if (n == 0) return QL_OK;
  QL_CHECK_PTR(out);
  QL_CHECK_PTR(in);
  QL_CHECK(out_dtype == QL_F32 || out_dtype == QL_BF16 || out_dtype == QL_F16,
           "ql_convert: out_dtype must be F32, BF16 or F16 (got %d)", out_dtype);
  QL_CHECK(in_dtype == QL_F32 || in_dtype == QL_BF16 || in_dtype == QL_F16,
           "ql_convert: in_dtype must be F32, BF16 or F16 (got %d)", in_dtype);
  QL_CHECK_NUMEL(n);
  QL_GUARD(return QL_CALL(ctx, convert, ctx, out, out_dtype, in, in_dtype, n);)
}

QL_API int64_t ql_read_file(const char* path, uint64_t offset, uint64_t bytes, void* host_dst,
                            int32_t direct) {
  if (!path || (!host_dst && bytes > 0)) return -EINVAL;
  if (offset > uint64_t(INT64_MAX) || bytes > uint64_t(INT64_MAX) - offset) return -EOVERFLOW;
  const bool aligned = offset % 4096 == 0 && bytes % 4096 == 0 && uintptr_t(host_dst) % 4096 == 0;
  int fd = -1;
  if (direct && aligned) fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);  // EINVAL where unsupported
  const bool is_direct = fd >= 0;
  if (fd < 0) fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  // the kernel reads ahead further for a file read start to end
  if (!is_direct) (void)posix_fadvise(fd, off_t(offset), off_t(bytes), POSIX_FADV_SEQUENTIAL);
  uint64_t done = 0;
  int64_t result = 0;
  while (done < bytes) {
    const size_t chunk = size_t(std::min<uint64_t>(bytes - done, uint64_t(1) << 30));
    const ssize_t n = pread(fd, static_cast<char*>(host_dst) + done, chunk, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      result = -errno;
      break;
    }
    if (n == 0) break;  // end of file
    done += uint64_t(n);
    if (is_direct && uint64_t(n) % 4096 != 0) break;  // a direct read ends short only at the end of the file
  }
  close(fd);
  return result < 0 ? result : int64_t(done);
}

}  // extern "C"
