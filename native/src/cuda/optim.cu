// optim.cu — AdamW (bitsandbytes' 32-bit rule), paged AdamW and paged 8-bit blockwise AdamW.
// State layout and placement follow the CPU backend (cpu/optim.cpp): per tensor one region,
// 32-bit [m n | v n] f32, 8-bit [absmax_m nb | absmax_v nb | qm n u8 | qv n u8] (blocks of 256,
// m on the signed dynamic map, v on the unsigned one). Paged kinds: tensors are placed in
// registration order; a tensor whose state still fits under budget_bytes lives in device memory,
// the others in managed memory (never more than cudaMemGetInfo reports free), prefetched to the
// device before their step and back to the host after it. Same kernels on both placements.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/cuda.cuh"

namespace ql::cuda {

namespace {

constexpr int64_t kBlock8 = 256;

struct TensorState {
  int64_t n = 0;
  size_t bytes = 0;
  bool spilled = false;  // managed memory
  void* base = nullptr;
};

struct Maps {
  float dyn[256], dyn_mid[255], um[256], um_mid[255];
};

struct Opt {
  std::vector<TensorState> t;
  uint64_t total = 0, resident = 0, peak = 0;
  bool eight_bit = false;
  Maps* maps = nullptr;  // device copy (8-bit)
};
Opt& opt_state(const ql_optimizer* o) { return *static_cast<Opt*>(o->impl); }

size_t state_bytes(int64_t n, bool eight) {
  if (!eight) return size_t(n) * 8;
  const int64_t nb = (n + kBlock8 - 1) / kBlock8;
  return size_t(nb) * 8 + size_t(n) * 2;
}

// bitsandbytes' unsigned dynamic map, built exactly as the CPU backend does.
void unsigned_map(float* value, float* mid) {
  std::vector<float> v;
  for (int i = 0; i < 7; i++) {
    const int items = (1 << (i + 1)) + 1;
    for (int k = 0; k + 1 < items; k++) {
      const float b0 = float(0.1 + 0.9 * k / (items - 1)), b1 = float(0.1 + 0.9 * (k + 1) / (items - 1));
      v.push_back(float(std::pow(10.0, i - 6) * double((b0 + b1) / 2.0f)));
    }
  }
  v.push_back(0.0f);
  v.push_back(1.0f);
  std::sort(v.begin(), v.end());
  for (int i = 0; i < 256; i++) value[i] = v[i];
  for (int i = 0; i < 255; i++) mid[i] = (v[i] + v[i + 1]) / 2.0f;
}

struct Hyper {
  float b1, b2, eps_c, step_size, decay, grad_scale;
  int wd;
};
Hyper make_hyper(float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
  Hyper h;
  const float c1 = 1.0f - std::pow(beta1, float(step));
  const float c2 = std::sqrt(1.0f - std::pow(beta2, float(step)));
  h.b1 = beta1;
  h.b2 = beta2;
  h.step_size = -lr * c2 / c1;
  h.eps_c = eps * c2;
  h.decay = 1.0f - lr * weight_decay;
  h.wd = weight_decay > 0.0f;
  h.grad_scale = grad_scale;
  return h;
}

cudaError_t prefetch(const void* p, size_t bytes, int device, cudaStream_t s) {
#if defined(QL_CUDA_EMU)
  return cudaMemPrefetchAsync(p, bytes, device, s);
#elif CUDART_VERSION >= 13000
  cudaMemLocation loc{};
  loc.type = device < 0 ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
  loc.id = device < 0 ? 0 : device;
  return cudaMemPrefetchAsync(p, bytes, loc, 0, s);
#else
  return cudaMemPrefetchAsync(p, bytes, device, s);
#endif
}

}  // namespace

// One element of the 32-bit rule with explicitly rounded operations (no FMA contraction).
__device__ __forceinline__ void adam_elem(const Hyper& h, float& p, float& m, float& v, float g0) {
  const float g = __fmul_rn(g0, h.grad_scale);
  m = __fadd_rn(__fmul_rn(m, h.b1), __fmul_rn(1.0f - h.b1, g));
  v = __fadd_rn(__fmul_rn(v, h.b2), __fmul_rn(1.0f - h.b2, __fmul_rn(g, g)));
  if (h.wd) p = __fmul_rn(p, h.decay);
  p = __fadd_rn(p, __fmul_rn(h.step_size, __fdiv_rn(m, __fadd_rn(__fsqrt_rn(v), h.eps_c))));
}

__global__ void adam32_kernel(float* p, const float* g, float* m, float* v, int64_t n, Hyper h) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    adam_elem(h, pi, mi, vi, g[i]);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// A block of 256 threads per state block: dequantize, step, re-quantize with the new absmax.
__global__ void __launch_bounds__(256) adam8_kernel(float* p, const float* g, void* base, int64_t n, Hyper h,
                                                    const Maps* maps) {
  QL_SHARED(float, dyn, 256);
  QL_SHARED(float, dmid, 256);
  QL_SHARED(float, um, 256);
  QL_SHARED(float, umid, 256);
  QL_SHARED(float, red, 32);
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    dyn[i] = maps->dyn[i];
    um[i] = maps->um[i];
    if (i < 255) {
      dmid[i] = maps->dyn_mid[i];
      umid[i] = maps->um_mid[i];
    }
  }
  __syncthreads();
  const int64_t nb = (n + kBlock8 - 1) / kBlock8;
  float* am = static_cast<float*>(base);
  float* av = am + nb;
  uint8_t* qm = reinterpret_cast<uint8_t*>(av + nb);
  uint8_t* qv = qm + n;
  for (int64_t b = blockIdx.x; b < nb; b += gridDim.x) {
    const int64_t i = b * kBlock8 + threadIdx.x;
    const bool live = threadIdx.x < kBlock8 && i < n;
    float m = 0.0f, v = 0.0f;
    if (live) {
      m = __fmul_rn(dyn[qm[i]], am[b]);
      v = __fmul_rn(um[qv[i]], av[b]);
      float pi = p[i];
      adam_elem(h, pi, m, v, g[i]);
      p[i] = pi;
    }
    const float nm = block_max(fabsf(m), red);
    const float nv = block_max(fabsf(v), red);
    if (threadIdx.x == 0) {
      am[b] = nm;
      av[b] = nv;
    }
    if (live) {
      const float im = nm > 0.0f ? __fdiv_rn(1.0f, nm) : 0.0f, iv = nv > 0.0f ? __fdiv_rn(1.0f, nv) : 0.0f;
      qm[i] = uint8_t(ql::bucketize<255>(dmid, fminf(1.0f, fmaxf(-1.0f, __fmul_rn(m, im)))));
      qv[i] = uint8_t(ql::bucketize<255>(umid, fminf(1.0f, __fmul_rn(v, iv))));
    }
  }
}

ql_status optimizer_init(ql_optimizer* opt) {
  auto* o = new Opt();
  o->eight_bit = opt->kind == QL_OPT_PAGED_ADAMW_8BIT;
  if (o->eight_bit) {
    Maps h;
    memcpy(h.dyn, ql::dynamic_map().value, sizeof h.dyn);
    memcpy(h.dyn_mid, ql::dynamic_map().midpoint, sizeof h.dyn_mid);
    unsigned_map(h.um, h.um_mid);
    if (state(opt->ctx).alloc.alloc(reinterpret_cast<void**>(&o->maps), sizeof(Maps)) != cudaSuccess) {
      delete o;
      return ql_fail(QL_E_OOM, "ql_optimizer_create: cannot allocate the quantization maps");
    }
    ql_status st = copy_to_device(opt->ctx, o->maps, &h, sizeof h);
    if (st != QL_OK) {
      state(opt->ctx).alloc.release(o->maps);
      delete o;
      return st;
    }
  }
  opt->impl = o;
  return QL_OK;
}

ql_status optimizer_add(ql_optimizer* opt, int64_t n, int64_t* out_index) {
  Opt& o = opt_state(opt);
  ql_ctx* ctx = opt->ctx;
  TensorState t;
  t.n = n;
  t.bytes = state_bytes(n, o.eight_bit);
  const bool paged = opt->kind != QL_OPT_ADAMW && opt->budget_bytes > 0;
  if (paged && o.resident + t.bytes > opt->budget_bytes) {
    size_t fr = 0, total = 0;
    QL_CUDA_TRY(cudaMemGetInfo(&fr, &total));
    if (t.bytes > fr)
      return ql_fail(QL_E_OOM, "ql_optimizer_add: %zu bytes of managed state exceed the %zu bytes free", t.bytes, fr);
    QL_CUDA_TRY(cudaMallocManaged(&t.base, t.bytes, cudaMemAttachGlobal));
    t.spilled = true;
    QL_CUDA_TRY(cudaMemsetAsync(t.base, 0, t.bytes, stream(ctx)));
    QL_CUDA_TRY(prefetch(t.base, t.bytes, cudaCpuDeviceId, stream(ctx)));
  } else {
    if (state(ctx).alloc.alloc(&t.base, t.bytes) != cudaSuccess)
      return ql_fail(QL_E_OOM, "ql_optimizer_add: cannot allocate %zu bytes of state", t.bytes);
    QL_CUDA_TRY(cudaMemsetAsync(t.base, 0, t.bytes, stream(ctx)));
    o.resident += t.bytes;
    o.peak = std::max(o.peak, o.resident);
  }
  QL_CUDA_TRY(cudaStreamSynchronize(stream(ctx)));
  o.total += t.bytes;
  o.t.push_back(t);
  *out_index = int64_t(o.t.size()) - 1;
  return QL_OK;
}

ql_status optimizer_size(const ql_optimizer* opt, int64_t index, int64_t* out_n, int64_t* out_count) {
  const Opt& o = opt_state(opt);
  *out_count = int64_t(o.t.size());
  *out_n = index >= 0 && index < *out_count ? o.t[size_t(index)].n : 0;
  return QL_OK;
}

static ql_status bring_in(ql_optimizer* opt, TensorState& t) {
  if (!t.spilled) return QL_OK;
  Opt& o = opt_state(opt);
  QL_CUDA_TRY(prefetch(t.base, t.bytes, state(opt->ctx).device, stream(opt->ctx)));
  o.resident += t.bytes;
  o.peak = std::max(o.peak, o.resident);
  return QL_OK;
}
static ql_status send_out(ql_optimizer* opt, TensorState& t) {
  if (!t.spilled) return QL_OK;
  Opt& o = opt_state(opt);
  QL_CUDA_TRY(prefetch(t.base, t.bytes, cudaCpuDeviceId, stream(opt->ctx)));
  o.resident -= t.bytes;
  return QL_OK;
}

ql_status optimizer_step(ql_optimizer* opt, int64_t index, float* param, const float* grad, float lr, float beta1,
                         float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  ql_ctx* ctx = opt->ctx;
  const Hyper h = make_hyper(lr, beta1, beta2, eps, weight_decay, grad_scale, step);
  ql_status st = bring_in(opt, t);
  if (st != QL_OK) return st;
  if (o.eight_bit) {
    const int64_t nb = (t.n + kBlock8 - 1) / kBlock8;
    QL_LAUNCH(unsigned(nb < 65535 * 16 ? nb : 65535 * 16), 256, 0, stream(ctx), adam8_kernel)(param, grad, t.base, t.n,
                                                                                              h, o.maps);
  } else {
    float* m = static_cast<float*>(t.base);
    QL_LAUNCH(grid_1d(t.n, 256), 256, 0, stream(ctx), adam32_kernel)(param, grad, m, m + t.n, t.n, h);
  }
  QL_LAUNCH_CHECK();
  st = send_out(opt, t);
  if (st != QL_OK) return st;
  // prefetch the next spilled tensor (steps usually go in registration order)
  if (size_t(index) + 1 < o.t.size() && o.t[size_t(index) + 1].spilled) {
    const TensorState& nx = o.t[size_t(index) + 1];
    (void)prefetch(nx.base, nx.bytes, state(ctx).device, stream(ctx));
    (void)cudaGetLastError();
  }
  return QL_OK;
}

ql_status optimizer_get_state(ql_optimizer* opt, int64_t index, float* host_m, float* host_v) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  std::vector<uint8_t> raw(t.bytes);
  ql_status st = copy_to_host(opt->ctx, raw.data(), t.base, t.bytes);
  if (st != QL_OK) return st;
  if (o.eight_bit) {
    Maps h;
    unsigned_map(h.um, h.um_mid);
    const float* dm = ql::dynamic_map().value;
    const int64_t nb = (t.n + kBlock8 - 1) / kBlock8;
    const float* am = reinterpret_cast<const float*>(raw.data());
    const float* av = am + nb;
    const uint8_t* qm = reinterpret_cast<const uint8_t*>(av + nb);
    const uint8_t* qv = qm + t.n;
    for (int64_t i = 0; i < t.n; i++) {
      host_m[i] = dm[qm[i]] * am[i / kBlock8];
      host_v[i] = h.um[qv[i]] * av[i / kBlock8];
    }
  } else {
    memcpy(host_m, raw.data(), size_t(t.n) * 4);
    memcpy(host_v, raw.data() + size_t(t.n) * 4, size_t(t.n) * 4);
  }
  return QL_OK;
}

ql_status optimizer_set_state(ql_optimizer* opt, int64_t index, const float* host_m, const float* host_v) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  std::vector<uint8_t> raw(t.bytes);
  if (o.eight_bit) {
    Maps h;
    unsigned_map(h.um, h.um_mid);
    const ql::DynamicMap& dm = ql::dynamic_map();
    const int64_t nb = (t.n + kBlock8 - 1) / kBlock8;
    float* am = reinterpret_cast<float*>(raw.data());
    float* av = am + nb;
    uint8_t* qm = reinterpret_cast<uint8_t*>(av + nb);
    uint8_t* qv = qm + t.n;
    for (int64_t b = 0; b < nb; b++) {
      const int64_t start = b * kBlock8, len = std::min(kBlock8, t.n - start);
      float a = 0.0f, c = 0.0f;
      for (int64_t i = 0; i < len; i++) {
        a = std::max(a, std::fabs(host_m[start + i]));
        c = std::max(c, std::fabs(host_v[start + i]));
      }
      am[b] = a;
      av[b] = c;
      const float im = a > 0.0f ? 1.0f / a : 0.0f, iv = c > 0.0f ? 1.0f / c : 0.0f;
      for (int64_t i = 0; i < len; i++) {
        qm[start + i] = uint8_t(ql::bucketize<255>(dm.midpoint, std::min(1.0f, std::max(-1.0f, host_m[start + i] * im))));
        qv[start + i] = uint8_t(ql::bucketize<255>(h.um_mid, std::min(1.0f, host_v[start + i] * iv)));
      }
    }
  } else {
    memcpy(raw.data(), host_m, size_t(t.n) * 4);
    memcpy(raw.data() + size_t(t.n) * 4, host_v, size_t(t.n) * 4);
  }
  return copy_to_device(opt->ctx, t.base, raw.data(), t.bytes);
}

ql_status optimizer_memory(const ql_optimizer* opt, uint64_t* host_out3) {
  const Opt& o = opt_state(opt);
  host_out3[0] = o.total;
  host_out3[1] = o.resident;
  host_out3[2] = o.peak;
  return QL_OK;
}

void optimizer_free(ql_optimizer* opt) {
  Opt* o = static_cast<Opt*>(opt->impl);
  if (!o) return;
  Allocator& al = state(opt->ctx).alloc;
  (void)cudaStreamSynchronize(stream(opt->ctx));
  for (TensorState& t : o->t) {
    if (t.spilled)
      (void)cudaFree(t.base);
    else
      al.release(t.base);
  }
  if (o->maps) al.release(o->maps);
  delete o;
  opt->impl = nullptr;
}

}  // namespace ql::cuda
