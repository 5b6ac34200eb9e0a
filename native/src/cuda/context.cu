// context.cu — CUDA context (device, stream, caching allocator), memory, dtype conversion and
// the backend table.
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "cuda/cuda.cuh"

namespace ql::cuda {

ql_status cuda_fail(cudaError_t e, const char* what) {
  return ql_fail(QL_E_BACKEND, "%s: %s (%s)", kBackendName, cudaGetErrorString(e), what);
}

cudaError_t Allocator::alloc(void** out, size_t bytes) {
  const size_t r = round(bytes);
  auto it = cached.lower_bound(r);
  // reuse a cached block of the same size class (at most 2x larger for big blocks)
  if (it != cached.end() && it->first <= (r < 4096 ? r : r + r / 8)) {
    *out = it->second;
    live[it->second] = it->first;
    live_bytes += it->first;
    cached_bytes -= it->first;
    cached.erase(it);
  } else {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, r);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      trim();
      e = cudaMalloc(&p, r);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e;
      }
    }
    *out = p;
    live[p] = r;
    live_bytes += r;
  }
  if (live_bytes > peak_bytes) peak_bytes = live_bytes;
  return cudaSuccess;
}

void Allocator::release(void* p) {
  auto it = live.find(p);
  if (it == live.end()) {
    (void)cudaFree(p);
    return;
  }
  live_bytes -= it->second;
  cached.emplace(it->second, p);
  cached_bytes += it->second;
  live.erase(it);
}

void Allocator::trim() {
  for (auto& kv : cached) (void)cudaFree(kv.second);
  cached.clear();
  cached_bytes = 0;
}

Scratch::Scratch(ql_ctx* c, size_t bytes) : ctx(c) {
  if (state(c).alloc.alloc(&ptr, bytes ? bytes : 1) != cudaSuccess) throw std::bad_alloc();
}
Scratch::~Scratch() {
  // queued work may still read the block: the stream is synchronized before reuse
  (void)cudaStreamSynchronize(state(ctx).stream);
  state(ctx).alloc.release(ptr);
}

ql_status ctx_init(ql_ctx* ctx, int32_t n_threads, int32_t device) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return ql_fail(QL_E_BACKEND, "%s: no CUDA device is available (%s)", kBackendName,
                   e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
  }
  if (device >= count)
    return ql_fail(QL_E_BACKEND, "%s: device %d does not exist (%d present)", kBackendName, device, count);
  QL_CUDA_TRY(cudaSetDevice(device));
  auto* s = new Ctx();
  s->device = device;
  e = cudaGetDeviceProperties(&s->prop, device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    delete s;
    return cuda_fail(e, "context creation");
  }
#if defined(QL_CUDA_EMU)
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  s->threads = n_threads > 0 ? n_threads : int(online > 0 ? online : 1);
  ql_emu::set_threads(s->threads);
#else
  s->threads = n_threads > 0 ? n_threads : 1;
#endif
  ctx->impl = s;
  ctx->threads = s->threads;
  return QL_OK;
}

void ctx_fini(ql_ctx* ctx) {
  Ctx* s = static_cast<Ctx*>(ctx->impl);
  if (!s) return;
  (void)cudaStreamSynchronize(s->stream);
  for (auto& kv : s->alloc.live) (void)cudaFree(kv.first);
  s->alloc.trim();
  (void)cudaStreamDestroy(s->stream);
  delete s;
}

ql_status describe(ql_ctx* ctx, std::string* json) {
  Ctx& s = state(ctx);
  size_t fr = 0, total = 0;
  QL_CUDA_TRY(cudaMemGetInfo(&fr, &total));
  char buf[768];
  std::string name = s.prop.name;
  for (char& ch : name)
    if (ch == '"' || ch == '\\') ch = ' ';
  snprintf(buf, sizeof buf,
           "{\"backend\":\"%s\",\"threads\":%d,\"isa\":\"sm_%d%d\",\"device\":\"%s\",\"ordinal\":%d,"
           "\"memory_bytes\":%llu,\"free_bytes\":%llu,\"sm_count\":%d,\"allocator_cached_bytes\":%llu,"
           "\"allocator_live_bytes\":%llu}",
           kBackendName, s.threads, s.prop.major, s.prop.minor, name.c_str(), s.device,
           (unsigned long long)total, (unsigned long long)fr, s.prop.multiProcessorCount,
           (unsigned long long)s.alloc.cached_bytes, (unsigned long long)s.alloc.live_bytes);
  *json = buf;
  return QL_OK;
}

ql_status sync(ql_ctx* ctx) {
  QL_CUDA_TRY(cudaStreamSynchronize(stream(ctx)));
  return QL_OK;
}

ql_status alloc(ql_ctx* ctx, uint64_t bytes, void** out) {
  if (state(ctx).alloc.alloc(out, bytes) != cudaSuccess)
    return ql_fail(QL_E_OOM, "ql_alloc: cannot allocate %llu bytes on the device", (unsigned long long)bytes);
  return QL_OK;
}

ql_status free_(ql_ctx* ctx, void* ptr) {
  // the block may be reused by the next allocation: finish queued work that reads it first
  QL_CUDA_TRY(cudaStreamSynchronize(stream(ctx)));
  state(ctx).alloc.release(ptr);
  return QL_OK;
}

ql_status copy_to_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes) {
  QL_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream(ctx)));
  QL_CUDA_TRY(cudaStreamSynchronize(stream(ctx)));  // the host buffer may be reused at once
  return QL_OK;
}
ql_status copy_to_host(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes) {
  QL_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream(ctx)));
  QL_CUDA_TRY(cudaStreamSynchronize(stream(ctx)));
  return QL_OK;
}
ql_status copy_device(ql_ctx* ctx, void* dst, const void* src, uint64_t bytes) {
  if (dst == src) return QL_OK;
  QL_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream(ctx)));
  return QL_OK;
}
ql_status fill_zero(ql_ctx* ctx, void* dst, uint64_t bytes) {
  QL_CUDA_TRY(cudaMemsetAsync(dst, 0, bytes, stream(ctx)));
  return QL_OK;
}

__global__ void convert_kernel(void* out, int32_t od, const void* in, int32_t id, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    ql::store_from_f32(out, od, i, ql::load_as_f32(in, id, i));
}

ql_status convert(ql_ctx* ctx, void* out, int32_t out_dtype, const void* in, int32_t in_dtype,
                  int64_t n) {
  if (out_dtype == in_dtype) return copy_device(ctx, out, in, uint64_t(n) * (in_dtype == QL_F32 ? 4 : 2));
  QL_LAUNCH(grid_1d(n, 256), 256, 0, stream(ctx), convert_kernel)(out, out_dtype, in, in_dtype, n);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

static const ql_backend kTable = [] {
  ql_backend t{};
  t.name = kBackendName;
#define QL_OP(ret, op, params) t.op = op;
#include "backend_ops.h"
  return t;
}();

}  // namespace ql::cuda

const ql_backend* ql_backend_table() { return &ql::cuda::kTable; }
