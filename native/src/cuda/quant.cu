// quant.cu — blockwise 4-bit quantization, double quantization of the absmax values, and the
// device storage of frozen 4-bit weights. Bit-exact with the CPU backend: the rules live in
// common/quant_math.h and use explicitly rounded operations (no FMA contraction).
#include <cstring>
#include <vector>

#include "cuda/cuda.cuh"

namespace ql::cuda {

// One thread block per quantization block (grid-stride over blocks).
__global__ void __launch_bounds__(128) quantize_4bit_kernel(uint8_t* __restrict__ packed, float* __restrict__ absmax,
                                                            const float* __restrict__ x, uint64_t n, int blocksize,
                                                            Codebook cb, uint8_t zero_code) {
  QL_SHARED(float, mid, 16);
  QL_SHARED(uint8_t, code, 16);
  QL_SHARED(float, scratch, 32);
  if (threadIdx.x < 15) mid[threadIdx.x] = cb.midpoint[threadIdx.x];
  if (threadIdx.x < 16) code[threadIdx.x] = cb.sorted_code[threadIdx.x];
  const uint64_t nb = (n + blocksize - 1) / blocksize;
  for (uint64_t b = blockIdx.x; b < nb; b += gridDim.x) {
    const uint64_t start = b * blocksize;
    const uint64_t end = start + blocksize < n ? start + blocksize : n;
    float amax = 0.0f;
    for (uint64_t i = start + threadIdx.x; i < end; i += blockDim.x) amax = fmaxf(amax, fabsf(x[i]));
    amax = block_max(amax, scratch);  // also orders the codebook copy before its use
    if (threadIdx.x == 0) absmax[b] = amax;
    const bool full = end - start == uint64_t(blocksize);
    for (uint64_t i = start + 2 * threadIdx.x; i < end; i += 2 * blockDim.x) {
      const uint8_t hi = ql::quantize_4bit_value(mid, code, ql::scale_into_unit(x[i], amax, full));
      const uint8_t lo = i + 1 < end ? ql::quantize_4bit_value(mid, code, ql::scale_into_unit(x[i + 1], amax, full))
                                     : zero_code;
      packed[i / 2] = uint8_t(hi << 4 | lo);
    }
  }
}

// Thread per output byte (two elements).
__global__ void dequantize_4bit_kernel(float* __restrict__ out, const uint8_t* __restrict__ packed,
                                       const float* __restrict__ absmax, uint64_t n, int blocksize, Code16 cb) {
  QL_SHARED(float, value, 16);
  load_code16(value, cb);
  __syncthreads();
  const uint64_t nbytes = (n + 1) / 2;
  for (uint64_t j = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < nbytes; j += uint64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = packed[j];
    const uint64_t i = 2 * j;
    const float a = absmax[i / blocksize];  // blocksize is even: both elements share the block
    out[i] = ql::mul_rn(value[byte >> 4], a);
    if (i + 1 < n) out[i + 1] = ql::mul_rn(value[byte & 15], a);
  }
}

// numpy's pairwise float32 summation (leaves of <= 128 with 8 accumulators) without recursion.
__device__ float pairwise_leaf(const float* a, uint64_t n) {
  if (n < 8) {
    float res = 0.0f;
    for (uint64_t i = 0; i < n; i++) res = ql::add_rn(res, a[i]);
    return res;
  }
  float r[8];
  for (int j = 0; j < 8; j++) r[j] = a[j];
  uint64_t i = 8;
  for (; i < n - n % 8; i += 8)
    for (int j = 0; j < 8; j++) r[j] = ql::add_rn(r[j], a[i + j]);
  float res = ql::add_rn(ql::add_rn(ql::add_rn(r[0], r[1]), ql::add_rn(r[2], r[3])),
                         ql::add_rn(ql::add_rn(r[4], r[5]), ql::add_rn(r[6], r[7])));
  for (; i < n; i++) res = ql::add_rn(res, a[i]);
  return res;
}

__global__ void absmax_mean_kernel(float* offset, const float* __restrict__ a, uint64_t n) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  struct Frame {
    uint64_t s, n;
    float left;
    int stage;
  };
  Frame st[48];
  int sp = 0;
  st[0] = Frame{0, n, 0.0f, 0};
  float ret = 0.0f;
  while (sp >= 0) {
    Frame& f = st[sp];
    if (f.n <= 128) {
      ret = pairwise_leaf(a + f.s, f.n);
      sp--;
      continue;
    }
    uint64_t n2 = f.n / 2;
    n2 -= n2 % 8;
    if (f.stage == 0) {
      f.stage = 1;
      st[sp + 1] = Frame{f.s, n2, 0.0f, 0};
      sp++;
    } else if (f.stage == 1) {
      f.left = ret;
      f.stage = 2;
      st[sp + 1] = Frame{f.s + n2, f.n - n2, 0.0f, 0};
      sp++;
    } else {
      ret = ql::add_rn(f.left, ret);
      sp--;
    }
  }
  offset[0] = ql::div_rn(ret, float(n));
}

struct DynMid {
  float mid[255];
};

__global__ void __launch_bounds__(256) quantize_absmax_8bit_kernel(uint8_t* __restrict__ q, float* __restrict__ absmax2,
                                                                   const float* __restrict__ offset,
                                                                   const float* __restrict__ a, uint64_t nb, int nbs,
                                                                   DynMid dm) {
  QL_SHARED(float, mid, 256);
  QL_SHARED(float, scratch, 32);
  for (int i = threadIdx.x; i < 255; i += blockDim.x) mid[i] = dm.mid[i];
  const float off = offset[0];
  const uint64_t nb2 = (nb + nbs - 1) / nbs;
  for (uint64_t c = blockIdx.x; c < nb2; c += gridDim.x) {
    const uint64_t start = c * nbs, end = start + nbs < nb ? start + nbs : nb;
    float amax = 0.0f;
    for (uint64_t i = start + threadIdx.x; i < end; i += blockDim.x) amax = fmaxf(amax, fabsf(a[i] - off));
    amax = block_max(amax, scratch);
    if (threadIdx.x == 0) absmax2[c] = amax;
    const bool full = end - start == uint64_t(nbs);
    for (uint64_t i = start + threadIdx.x; i < end; i += blockDim.x)
      q[i] = ql::quantize_8bit_value(mid, ql::scale_into_unit(a[i] - off, amax, full));
  }
}

struct DynVal {
  float v[256];
};

__global__ void dequantize_absmax_8bit_kernel(float* __restrict__ a, const uint8_t* __restrict__ q,
                                              const float* __restrict__ absmax2, const float* __restrict__ offset,
                                              uint64_t nb, int nbs, DynVal dv) {
  QL_SHARED(float, dyn, 256);
  for (int i = threadIdx.x; i < 256; i += blockDim.x) dyn[i] = dv.v[i];
  __syncthreads();
  const float off = offset[0];
  for (uint64_t b = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < nb; b += uint64_t(gridDim.x) * blockDim.x)
    a[b] = ql::dequant_absmax(dyn, q[b], absmax2[b / nbs], off);
}

ql_status quantize_4bit(ql_ctx* ctx, uint8_t* packed, float* absmax, const float* x, uint64_t n,
                        int32_t blocksize, int32_t quant_type) {
  const Codebook& cb = ql::codebook(quant_type);
  const uint8_t zero = ql::quantize_4bit_value(cb.midpoint, cb.sorted_code, 0.0f);
  const uint64_t nb = (n + blocksize - 1) / blocksize;
  const unsigned grid = unsigned(nb < 65535 * 16 ? nb : 65535 * 16);
  QL_LAUNCH(grid, 128, 0, stream(ctx), quantize_4bit_kernel)(packed, absmax, x, n, blocksize, cb, zero);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

ql_status dequantize_4bit(ql_ctx* ctx, float* out, const uint8_t* packed, const float* absmax,
                          uint64_t n, int32_t blocksize, int32_t quant_type) {
  QL_LAUNCH(grid_1d(int64_t((n + 1) / 2), 256), 256, 0, stream(ctx), dequantize_4bit_kernel)(
      out, packed, absmax, n, blocksize, code16(quant_type));
  QL_LAUNCH_CHECK();
  return QL_OK;
}

ql_status quantize_absmax_8bit(ql_ctx* ctx, uint8_t* qabsmax, float* absmax2, float* offset,
                               const float* absmax, uint64_t nb, int32_t nested_blocksize) {
  QL_LAUNCH(1, 32, 0, stream(ctx), absmax_mean_kernel)(offset, absmax, nb);
  QL_LAUNCH_CHECK();
  DynMid dm;
  memcpy(dm.mid, ql::dynamic_map().midpoint, sizeof dm.mid);
  const uint64_t nb2 = (nb + nested_blocksize - 1) / nested_blocksize;
  QL_LAUNCH(unsigned(nb2 < 65535 * 16 ? nb2 : 65535 * 16), 256, 0, stream(ctx), quantize_absmax_8bit_kernel)(
      qabsmax, absmax2, offset, absmax, nb, nested_blocksize, dm);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

ql_status dequantize_absmax_8bit(ql_ctx* ctx, float* absmax, const uint8_t* qabsmax,
                                 const float* absmax2, const float* offset, uint64_t nb,
                                 int32_t nested_blocksize) {
  DynVal dv;
  memcpy(dv.v, ql::dynamic_map().value, sizeof dv.v);
  QL_LAUNCH(grid_1d(int64_t(nb), 256), 256, 0, stream(ctx), dequantize_absmax_8bit_kernel)(
      absmax, qabsmax, absmax2, offset, nb, nested_blocksize, dv);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- frozen 4-bit weights

static ql_status qweight_alloc(ql_ctx* ctx, const ql_qweight* w, QWeight* q) {
  Allocator& al = state(ctx).alloc;
  const uint64_t n = w->n(), nb = w->nblocks();
  if (al.alloc(reinterpret_cast<void**>(&q->packed), (n + 1) / 2) != cudaSuccess ||
      al.alloc(reinterpret_cast<void**>(&q->absmax), nb * 4) != cudaSuccess)
    return ql_fail(QL_E_OOM, "ql_qweight: cannot allocate %llu x %llu 4-bit weights on the device",
                   (unsigned long long)w->rows, (unsigned long long)w->cols);
  if (w->double_quant &&
      (al.alloc(reinterpret_cast<void**>(&q->qabsmax), nb) != cudaSuccess ||
       al.alloc(reinterpret_cast<void**>(&q->absmax2), w->nblocks2() * 4) != cudaSuccess))
    return ql_fail(QL_E_OOM, "ql_qweight: cannot allocate double-quant constants");
  return QL_OK;
}

static void qweight_release(ql_ctx* ctx, QWeight* q) {
  Allocator& al = state(ctx).alloc;
  (void)cudaStreamSynchronize(state(ctx).stream);
  for (void* p : {static_cast<void*>(q->packed), static_cast<void*>(q->absmax), static_cast<void*>(q->qabsmax),
                  static_cast<void*>(q->absmax2)})
    if (p) al.release(p);
  delete q;
}

ql_status qweight_quantize(ql_ctx* ctx, ql_qweight* w, const void* host_w, int32_t w_dtype) {
  auto* q = new QWeight();
  ql_status st = qweight_alloc(ctx, w, q);
  if (st != QL_OK) {
    qweight_release(ctx, q);
    return st;
  }
  const uint64_t n = w->n(), nb = w->nblocks();
  {
    // a 16-bit source crosses the bus as it is and is widened on the device
    Scratch dw(ctx, n * 4);
    if (w_dtype == QL_F32) {
      st = copy_to_device(ctx, dw.ptr, host_w, n * 4);
    } else {
      Scratch d16(ctx, n * 2);
      st = copy_to_device(ctx, d16.ptr, host_w, n * 2);
      if (st == QL_OK) st = convert(ctx, dw.ptr, QL_F32, d16.ptr, w_dtype, int64_t(n));
    }
    if (st == QL_OK) st = quantize_4bit(ctx, q->packed, q->absmax, dw.as<float>(), n, w->blocksize, w->quant_type);
    if (st == QL_OK && w->double_quant) {
      Scratch off(ctx, 4);
      st = quantize_absmax_8bit(ctx, q->qabsmax, q->absmax2, off.as<float>(), q->absmax, nb, w->nested_blocksize);
      // compute with what is stored: the 8-bit absmax, dequantized
      if (st == QL_OK)
        st = dequantize_absmax_8bit(ctx, q->absmax, q->qabsmax, q->absmax2, off.as<float>(), nb, w->nested_blocksize);
      if (st == QL_OK) st = copy_to_host(ctx, &q->offset, off.ptr, 4);
    }
    if (st == QL_OK) st = sync(ctx);
  }
  if (st != QL_OK) {
    qweight_release(ctx, q);
    return st;
  }
  w->impl = q;
  return QL_OK;
}

ql_status qweight_import(ql_ctx* ctx, ql_qweight* w, const uint8_t* host_packed,
                         const float* host_absmax, const uint8_t* host_qabsmax,
                         const float* host_absmax2, float offset) {
  auto* q = new QWeight();
  ql_status st = qweight_alloc(ctx, w, q);
  const uint64_t n = w->n(), nb = w->nblocks();
  if (st == QL_OK) st = copy_to_device(ctx, q->packed, host_packed, (n + 1) / 2);
  if (st == QL_OK) st = copy_to_device(ctx, q->absmax, host_absmax, nb * 4);
  if (st == QL_OK && w->double_quant) {
    st = copy_to_device(ctx, q->qabsmax, host_qabsmax, nb);
    if (st == QL_OK) st = copy_to_device(ctx, q->absmax2, host_absmax2, w->nblocks2() * 4);
    q->offset = offset;
  }
  if (st != QL_OK) {
    qweight_release(ctx, q);
    return st;
  }
  w->impl = q;
  return QL_OK;
}

ql_status qweight_export(ql_ctx* ctx, const ql_qweight* w, uint8_t* host_packed, float* host_absmax,
                         uint8_t* host_qabsmax, float* host_absmax2, float* host_offset) {
  const QWeight& q = qw(w);
  const uint64_t n = w->n(), nb = w->nblocks();
  ql_status st = QL_OK;
  if (host_packed) st = copy_to_host(ctx, host_packed, q.packed, (n + 1) / 2);
  if (st == QL_OK && host_absmax) st = copy_to_host(ctx, host_absmax, q.absmax, nb * 4);
  if (st == QL_OK && host_qabsmax) st = copy_to_host(ctx, host_qabsmax, q.qabsmax, nb);
  if (st == QL_OK && host_absmax2) st = copy_to_host(ctx, host_absmax2, q.absmax2, w->nblocks2() * 4);
  if (host_offset) *host_offset = q.offset;
  return st;
}

ql_status qweight_bytes(const ql_qweight* w, int64_t* out2) {
  const uint64_t n = w->n(), nb = w->nblocks();
  out2[0] = int64_t((n + 1) / 2);
  out2[1] = w->double_quant ? int64_t(nb + 4 * w->nblocks2() + 4) : int64_t(4 * nb);
  return QL_OK;
}

__global__ void qweight_dequantize_kernel(void* __restrict__ out, int32_t dtype, const uint8_t* __restrict__ packed,
                                          const float* __restrict__ absmax, uint64_t n, int blocksize, Code16 cb) {
  QL_SHARED(float, value, 16);
  load_code16(value, cb);
  __syncthreads();
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = packed[i / 2];
    const uint8_t code = (i & 1) ? (byte & 15) : (byte >> 4);
    st(out, dtype, int64_t(i), ql::mul_rn(value[code], absmax[i / blocksize]));
  }
}

ql_status qweight_dequantize(ql_ctx* ctx, void* out, const ql_qweight* w, int32_t dtype) {
  const QWeight& q = qw(w);
  QL_LAUNCH(grid_1d(int64_t(w->n()), 256), 256, 0, stream(ctx), qweight_dequantize_kernel)(
      out, dtype, q.packed, q.absmax, w->n(), w->blocksize, code16(w->quant_type));
  QL_LAUNCH_CHECK();
  return QL_OK;
}

void qweight_free(ql_qweight* w) {
  if (w->impl) qweight_release(w->ctx, static_cast<QWeight*>(w->impl));
  w->impl = nullptr;
}

}  // namespace ql::cuda
