// optim.cpp — AdamW (bitsandbytes' 32-bit update rule, see qlora.h), paged AdamW and paged
// 8-bit blockwise AdamW on the CPU.
//
// State per tensor is one contiguous region: 32-bit [m n f32 | v n f32]; 8-bit
// [absmax_m nb f32 | absmax_v nb f32 | qm n u8 | qv n u8] with nb = ceil(n / 256) (bitsandbytes'
// AdamW8bit blockwise: m on the signed dynamic map, v on the unsigned dynamic map, absmax per
// block of 256; the update uses the dequantized state and re-quantizes with the new absmax).
// Paged kinds: tensors are placed in order of registration; a tensor whose state still fits
// under budget_bytes (0 = unlimited) lives in ordinary memory, the others in a shared mapping of
// one file under spill_dir (or $TMPDIR, /tmp) that is unlinked right after creation. Before a
// spilled tensor's step its pages are prefetched (MADV_WILLNEED; the next spilled tensor is
// prefetched after each step) and afterwards dropped from the process (MADV_DONTNEED: the data
// stays in the file). The same kernel runs on both placements, so paging is bit-exact.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/quant_math.h"
#include "cpu/linalg.h"

namespace ql::cpu {

namespace {

constexpr int64_t kBlock8 = 256;

struct TensorState {
  int64_t n = 0;
  size_t bytes = 0;   // state bytes
  size_t map_len = 0; // mapping length (page-rounded) when spilled
  bool spilled = false;
  void* base = nullptr;
};

struct Opt {
  std::vector<TensorState> t;
  int fd = -1;
  size_t file_size = 0;
  uint64_t total = 0, resident = 0, peak = 0;
  bool eight_bit = false;
};

Opt& opt_state(const ql_optimizer* o) { return *static_cast<Opt*>(o->impl); }

size_t state_bytes(int64_t n, bool eight) {
  if (!eight) return size_t(n) * 8;
  const int64_t nb = (n + kBlock8 - 1) / kBlock8;
  return size_t(nb) * 8 + size_t(n) * 2;
}

// bitsandbytes' unsigned dynamic map (create_dynamic_map(signed=False)): for i in 0..6 the
// midpoints of linspace(0.1, 1, 2^(i+1) + 1) times 10^(i-6), plus 0 and 1; ascending.
struct UMap {
  float value[256];
  float midpoint[255];
};
const UMap& unsigned_map() {
  static const UMap m = [] {
    UMap u{};
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
    for (int i = 0; i < 256; i++) u.value[i] = v[i];
    for (int i = 0; i < 255; i++) u.midpoint[i] = (v[i] + v[i + 1]) / 2.0f;
    return u;
  }();
  return m;
}

struct Hyper {
  float b1, b2, eps_c, step_size, decay, grad_scale;
  bool wd;
};

Hyper make_hyper(float lr, float beta1, float beta2, float eps, float weight_decay,
                 float grad_scale, int64_t step) {
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

// One element of bitsandbytes' 32-bit AdamW (float arithmetic, no contraction).
inline void adam_elem(const Hyper& h, float& p, float& m, float& v, float g0) {
  const float g = g0 * h.grad_scale;
  m = m * h.b1 + (1.0f - h.b1) * g;
  v = v * h.b2 + (1.0f - h.b2) * (g * g);
  if (h.wd) p = p * h.decay;
  p = p + h.step_size * (m / (std::sqrt(v) + h.eps_c));
}

void step32(const Hyper& h, float* p, const float* g, float* m, float* v, int64_t n, int nth) {
#pragma omp parallel for num_threads(nth) schedule(static) if (n > 65536)
  for (int64_t c = 0; c < (n + 4095) / 4096; c++) {
    const int64_t e1 = std::min(n, (c + 1) * 4096);
    for (int64_t i = c * 4096; i < e1; i++) adam_elem(h, p[i], m[i], v[i], g[i]);
  }
}

struct View8 {
  float* am;
  float* av;
  uint8_t* qm;
  uint8_t* qv;
};
View8 view8(void* base, int64_t n) {
  const int64_t nb = (n + kBlock8 - 1) / kBlock8;
  float* f = static_cast<float*>(base);
  uint8_t* q = reinterpret_cast<uint8_t*>(f + 2 * nb);
  return {f, f + nb, q, q + n};
}

// Quantizes block b of m, v (float, length len) into the 8-bit state.
void quant_block8(const View8& s, int64_t b, int64_t start, int64_t len, const float* m, const float* v) {
  const DynamicMap& dm = dynamic_map();
  const UMap& um = unsigned_map();
  float am = 0.0f, av = 0.0f;
  for (int64_t i = 0; i < len; i++) {
    am = std::max(am, std::fabs(m[i]));
    av = std::max(av, std::fabs(v[i]));
  }
  s.am[b] = am;
  s.av[b] = av;
  const float im = am > 0.0f ? 1.0f / am : 0.0f, iv = av > 0.0f ? 1.0f / av : 0.0f;
  for (int64_t i = 0; i < len; i++) {
    s.qm[start + i] = uint8_t(bucketize<255>(dm.midpoint, std::min(1.0f, std::max(-1.0f, m[i] * im))));
    s.qv[start + i] = uint8_t(bucketize<255>(um.midpoint, std::min(1.0f, v[i] * iv)));
  }
}

void step8(const Hyper& h, float* p, const float* g, void* base, int64_t n, int nth) {
  const View8 s = view8(base, n);
  const float* dm = dynamic_map().value;
  const float* um = unsigned_map().value;
  const int64_t nb = (n + kBlock8 - 1) / kBlock8;
#pragma omp parallel for num_threads(nth) schedule(static) if (nb > 64)
  for (int64_t b = 0; b < nb; b++) {
    float m[kBlock8], v[kBlock8];
    const int64_t start = b * kBlock8, len = std::min(kBlock8, n - start);
    const float am = s.am[b], av = s.av[b];
    for (int64_t i = 0; i < len; i++) {
      m[i] = dm[s.qm[start + i]] * am;
      v[i] = um[s.qv[start + i]] * av;
      adam_elem(h, p[start + i], m[i], v[i], g[start + i]);
    }
    quant_block8(s, b, start, len, m, v);
  }
}

size_t page_size() { return size_t(sysconf(_SC_PAGESIZE)); }

// Brings a spilled tensor's pages in (accounting them as resident) / drops them again.
void bring_in(Opt& o, TensorState& t) {
  if (!t.spilled) return;
  madvise(t.base, t.map_len, MADV_WILLNEED);
  o.resident += t.bytes;
  o.peak = std::max(o.peak, o.resident);
}
void send_out(Opt& o, TensorState& t) {
  if (!t.spilled) return;
  madvise(t.base, t.map_len, MADV_DONTNEED);
  o.resident -= t.bytes;
}

}  // namespace

ql_status optimizer_init(ql_optimizer* opt) {
  auto* o = new Opt();
  o->eight_bit = opt->kind == QL_OPT_PAGED_ADAMW_8BIT;
  opt->impl = o;
  return QL_OK;
}

ql_status optimizer_add(ql_optimizer* opt, int64_t n, int64_t* out_index) {
  Opt& o = opt_state(opt);
  TensorState t;
  t.n = n;
  t.bytes = state_bytes(n, o.eight_bit);
  const bool paged = opt->kind != QL_OPT_ADAMW && opt->budget_bytes > 0;
  if (paged && o.resident + t.bytes > opt->budget_bytes) {
    if (o.fd < 0) {
      std::string dir = opt->spill_dir;
      if (dir.empty()) {
        const char* tmp = getenv("TMPDIR");
        dir = tmp && tmp[0] ? tmp : "/tmp";
      }
      std::string path = dir + "/qlora_optim_XXXXXX";
      std::vector<char> buf(path.begin(), path.end());
      buf.push_back('\0');
      o.fd = mkstemp(buf.data());
      if (o.fd < 0)
        return ql_fail(QL_E_IO, "ql_optimizer_add: cannot create a spill file in %s: %s", dir.c_str(), strerror(errno));
      unlink(buf.data());
    }
    const size_t ps = page_size();
    t.map_len = (t.bytes + ps - 1) / ps * ps;
    const size_t off = o.file_size;
    if (ftruncate(o.fd, off_t(off + t.map_len)) != 0)
      return ql_fail(QL_E_IO, "ql_optimizer_add: cannot grow the spill file: %s", strerror(errno));
    void* p = mmap(nullptr, t.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, o.fd, off_t(off));
    if (p == MAP_FAILED) return ql_fail(QL_E_IO, "ql_optimizer_add: mmap of the spill file failed: %s", strerror(errno));
    o.file_size = off + t.map_len;
    t.base = p;
    t.spilled = true;
  } else {
    const size_t len = (t.bytes + 63) / 64 * 64;
    t.base = std::aligned_alloc(64, len);
    if (!t.base) return ql_fail(QL_E_OOM, "ql_optimizer_add: cannot allocate %zu bytes of state", t.bytes);
    memset(t.base, 0, len);
    o.resident += t.bytes;
    o.peak = std::max(o.peak, o.resident);
  }
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

ql_status optimizer_step(ql_optimizer* opt, int64_t index, float* param, const float* grad,
                         float lr, float beta1, float beta2, float eps, float weight_decay,
                         float grad_scale, int64_t step) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  const int nth = threads(opt->ctx);
  const Hyper h = make_hyper(lr, beta1, beta2, eps, weight_decay, grad_scale, step);
  bring_in(o, t);
  if (o.eight_bit) {
    step8(h, param, grad, t.base, t.n, nth);
  } else {
    float* m = static_cast<float*>(t.base);
    step32(h, param, grad, m, m + t.n, t.n, nth);
  }
  send_out(o, t);
  // prefetch the next spilled tensor (steps usually go in registration order)
  if (size_t(index) + 1 < o.t.size() && o.t[size_t(index) + 1].spilled)
    madvise(o.t[size_t(index) + 1].base, o.t[size_t(index) + 1].map_len, MADV_WILLNEED);
  return QL_OK;
}

ql_status optimizer_get_state(ql_optimizer* opt, int64_t index, float* host_m, float* host_v) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  bring_in(o, t);
  if (o.eight_bit) {
    const View8 s = view8(t.base, t.n);
    const float* dm = dynamic_map().value;
    const float* um = unsigned_map().value;
    for (int64_t i = 0; i < t.n; i++) {
      host_m[i] = dm[s.qm[i]] * s.am[i / kBlock8];
      host_v[i] = um[s.qv[i]] * s.av[i / kBlock8];
    }
  } else {
    memcpy(host_m, t.base, size_t(t.n) * 4);
    memcpy(host_v, static_cast<float*>(t.base) + t.n, size_t(t.n) * 4);
  }
  send_out(o, t);
  return QL_OK;
}

ql_status optimizer_set_state(ql_optimizer* opt, int64_t index, const float* host_m,
                              const float* host_v) {
  Opt& o = opt_state(opt);
  TensorState& t = o.t[size_t(index)];
  bring_in(o, t);
  if (o.eight_bit) {
    const View8 s = view8(t.base, t.n);
    for (int64_t b = 0; b * kBlock8 < t.n; b++) {
      const int64_t start = b * kBlock8, len = std::min(kBlock8, t.n - start);
      quant_block8(s, b, start, len, host_m + start, host_v + start);
    }
  } else {
    memcpy(t.base, host_m, size_t(t.n) * 4);
    memcpy(static_cast<float*>(t.base) + t.n, host_v, size_t(t.n) * 4);
  }
  send_out(o, t);
  return QL_OK;
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
  for (TensorState& t : o->t) {
    if (t.spilled) munmap(t.base, t.map_len);
    else std::free(t.base);
  }
  if (o->fd >= 0) close(o->fd);
  delete o;
  opt->impl = nullptr;
}

}  // namespace ql::cpu
