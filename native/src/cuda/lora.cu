// lora.cu — LoRA forward/backward (dropout mask from common/lora_math.h, identical to the CPU
// backend) and the multi-adapter serving kernel (SGMV-style: rows grouped by adapter, a block per
// segment of up to 8 rows gathers its adapter's A and B by pointer once; ranks may differ per
// adapter).
#include <vector>

#include "common/lora_math.h"
#include "cuda/cuda.cuh"

namespace ql::cuda {

struct Drop {
  uint64_t key;
  float p, inv_keep;  // p == 0: no dropout
  __device__ __forceinline__ float apply(float x, uint64_t idx) const {
    if (p == 0.0f) return x;
    return ql::lora_dropout_keep(key, idx, p) ? ql::mul_rn(x, inv_keep) : 0.0f;
  }
};
static Drop make_drop(float p, uint64_t seed) {
  return Drop{ql::lora_dropout_key(seed), p, p > 0.0f ? 1.0f / (1.0f - p) : 1.0f};
}

// xa[t, r] = Σ_i drop(x)[t, i] · A[r, i]: a warp per (t, r).
__global__ void lora_xa_kernel(float* xa, const void* x, const float* A, int64_t T, int64_t in, int64_t r, Drop drop,
                               int32_t dtype) {
  const int lane = threadIdx.x & 31;
  const int64_t wid = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (wid >= T * r) return;
  const int64_t t = wid / r, k = wid % r;
  float s = 0.0f;
  for (int64_t i = lane; i < in; i += 32) s += drop.apply(ld(x, dtype, t * in + i), uint64_t(t * in + i)) * A[k * in + i];
  s = warp_sum(s);
  if (lane == 0) xa[wid] = s;
}
// y[t, o] += scale · Σ_k xa[t, k] · B[o, k]
__global__ void lora_y_kernel(void* y, const float* xa, const float* B, int64_t T, int64_t out, int64_t r, float scale,
                              int32_t dtype) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < T * out; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / out, o = i % out;
    float s = 0.0f;
    for (int64_t k = 0; k < r; k++) s += xa[t * r + k] * B[o * r + k];
    st(y, dtype, i, ld(y, dtype, i) + scale * s);
  }
}
// dxa[t, k] = scale · Σ_o dy[t, o] · B[o, k]
__global__ void lora_dxa_kernel(float* dxa, const void* dy, const float* B, int64_t T, int64_t out, int64_t r,
                                float scale, int32_t dtype) {
  const int lane = threadIdx.x & 31;
  const int64_t wid = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (wid >= T * r) return;
  const int64_t t = wid / r, k = wid % r;
  float s = 0.0f;
  for (int64_t o = lane; o < out; o += 32) s += ld(dy, dtype, t * out + o) * B[o * r + k];
  s = warp_sum(s);
  if (lane == 0) dxa[wid] = scale * s;
}
// dB[o, k] += scale · Σ_t dy[t, o] · xa[t, k]
__global__ void lora_db_kernel(float* dB, const void* dy, const float* xa, int64_t T, int64_t out, int64_t r,
                               float scale, int32_t dtype) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < out * r; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i / r, k = i % r;
    float s = 0.0f;
    for (int64_t t = 0; t < T; t++) s += ld(dy, dtype, t * out + o) * xa[t * r + k];
    dB[i] += scale * s;
  }
}
// dA[k, i] += Σ_t dxa[t, k] · drop(x)[t, i]
__global__ void lora_da_kernel(float* dA, const float* dxa, const void* x, int64_t T, int64_t in, int64_t r, Drop drop,
                               int32_t dtype) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < r * in; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = j / in, i = j % in;
    float s = 0.0f;
    for (int64_t t = 0; t < T; t++) s += dxa[t * r + k] * drop.apply(ld(x, dtype, t * in + i), uint64_t(t * in + i));
    dA[j] += s;
  }
}
// dx[t, i] += drop'(Σ_k dxa[t, k] · A[k, i])
__global__ void lora_dx_kernel(void* dx, const float* dxa, const float* A, int64_t T, int64_t in, int64_t r, Drop drop,
                               int32_t dtype) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < T * in; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = j / in, i = j % in;
    float s = 0.0f;
    for (int64_t k = 0; k < r; k++) s += dxa[t * r + k] * A[k * in + i];
    st(dx, dtype, j, ld(dx, dtype, j) + drop.apply(s, uint64_t(j)));
  }
}

ql_status lora_forward(ql_ctx* ctx, void* y, float* xa, const void* x, const float* A, const float* B, int64_t T,
                       int64_t in, int64_t out, int64_t r, float scale, float dropout_p, uint64_t seed,
                       int32_t dtype) {
  Scratch tmp(ctx, xa ? 4 : uint64_t(T * r) * 4);
  float* xa_d = xa ? xa : tmp.as<float>();
  const Drop drop = make_drop(dropout_p, seed);
  QL_LAUNCH(grid_1d(T * r * 32, 256), 256, 0, stream(ctx), lora_xa_kernel)(xa_d, x, A, T, in, r, drop, dtype);
  QL_LAUNCH(grid_1d(T * out, 256), 256, 0, stream(ctx), lora_y_kernel)(y, xa_d, B, T, out, r, scale, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

ql_status lora_backward(ql_ctx* ctx, void* dx, float* dA, float* dB, const void* dy, const void* x, const float* xa,
                        const float* A, const float* B, int64_t T, int64_t in, int64_t out, int64_t r, float scale,
                        float dropout_p, uint64_t seed, int32_t dtype) {
  const Drop drop = make_drop(dropout_p, seed);
  Scratch xa_tmp(ctx, xa ? 4 : uint64_t(T * r) * 4);
  Scratch dxa(ctx, uint64_t(T * r) * 4);
  if (!xa) {
    QL_LAUNCH(grid_1d(T * r * 32, 256), 256, 0, stream(ctx), lora_xa_kernel)(xa_tmp.as<float>(), x, A, T, in, r, drop,
                                                                             dtype);
    xa = xa_tmp.as<float>();
  }
  QL_LAUNCH(grid_1d(T * r * 32, 256), 256, 0, stream(ctx), lora_dxa_kernel)(dxa.as<float>(), dy, B, T, out, r, scale,
                                                                            dtype);
  QL_LAUNCH(grid_1d(out * r, 256), 256, 0, stream(ctx), lora_db_kernel)(dB, dy, xa, T, out, r, scale, dtype);
  QL_LAUNCH(grid_1d(r * in, 256), 256, 0, stream(ctx), lora_da_kernel)(dA, dxa.as<float>(), x, T, in, r, drop, dtype);
  if (dx)
    QL_LAUNCH(grid_1d(T * in, 256), 256, 0, stream(ctx), lora_dx_kernel)(dx, dxa.as<float>(), A, T, in, r, drop,
                                                                          dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// SGMV: rows are grouped by adapter on the host (decode batches name adapters in any order) into
// segments of up to kSegRows rows with the same adapter; a block per segment computes xa for all
// its rows (each A row is read once per segment, not once per token) and then their outputs (each
// B row once per segment). seg: (offset into rows, row count, adapter) triples; rows: the token
// rows of every segment, in segment order.
constexpr int kSegRows = 8;
__global__ void __launch_bounds__(256) lora_sgmv_kernel(void* y, const void* x, const int3* seg, const int32_t* rows,
                                                        const uint64_t* a_ptrs, const uint64_t* b_ptrs,
                                                        const int32_t* ranks, const float* scales, int64_t in,
                                                        int64_t out, int32_t dtype) {
  QL_DYN_SHARED(float, xa);  // [kSegRows][r]
  const int3 sg = seg[blockIdx.x];
  const int32_t* trow = rows + sg.x;
  const int nr = sg.y, a = sg.z;
  const float* A = reinterpret_cast<const float*>(a_ptrs[a]);
  const float* B = reinterpret_cast<const float*>(b_ptrs[a]);
  const int r = ranks[a];
  const float sc = scales[a];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int k = warp; k < r; k += nw) {
    float s[kSegRows];
#pragma unroll
    for (int j = 0; j < kSegRows; j++) s[j] = 0.0f;
    for (int64_t i = lane; i < in; i += 32) {
      const float av = A[int64_t(k) * in + i];
#pragma unroll
      for (int j = 0; j < kSegRows; j++)
        if (j < nr) s[j] += ld(x, dtype, int64_t(trow[j]) * in + i) * av;
    }
#pragma unroll
    for (int j = 0; j < kSegRows; j++) {
      const float v = warp_sum(s[j]);
      if (lane == 0 && j < nr) xa[j * r + k] = v;
    }
  }
  __syncthreads();
  for (int64_t o = threadIdx.x; o < out; o += blockDim.x) {
    float s[kSegRows];
#pragma unroll
    for (int j = 0; j < kSegRows; j++) s[j] = 0.0f;
    for (int k = 0; k < r; k++) {
      const float b = B[o * r + k];
#pragma unroll
      for (int j = 0; j < kSegRows; j++)
        if (j < nr) s[j] += xa[j * r + k] * b;
    }
    for (int j = 0; j < nr; j++) {
      const int64_t idx = int64_t(trow[j]) * out + o;
      st(y, dtype, idx, ld(y, dtype, idx) + sc * s[j]);
    }
  }
}

ql_status lora_multi_forward(ql_ctx* ctx, void* y, const void* x, const int32_t* host_row_adapter,
                             const uint64_t* host_a_ptrs, const uint64_t* host_b_ptrs, const int32_t* host_ranks,
                             const float* host_scales, int64_t n_adapters, int64_t T, int64_t in, int64_t out,
                             int32_t dtype) {
  if (T == 0) return QL_OK;
  const int64_t na = n_adapters > 0 ? n_adapters : 1;
  Scratch d_a(ctx, uint64_t(na) * 8), d_b(ctx, uint64_t(na) * 8), d_r(ctx, uint64_t(na) * 4), d_s(ctx, uint64_t(na) * 4);
  ql_status st = QL_OK;
  if (n_adapters > 0) {
    st = copy_to_device(ctx, d_a.ptr, host_a_ptrs, uint64_t(n_adapters) * 8);
    if (st == QL_OK) st = copy_to_device(ctx, d_b.ptr, host_b_ptrs, uint64_t(n_adapters) * 8);
    if (st == QL_OK) st = copy_to_device(ctx, d_r.ptr, host_ranks, uint64_t(n_adapters) * 4);
    if (st == QL_OK) st = copy_to_device(ctx, d_s.ptr, host_scales, uint64_t(n_adapters) * 4);
  }
  if (st != QL_OK) return st;
  if (n_adapters == 0) return QL_OK;
  // group the rows by adapter (stable), then cut each group into segments of kSegRows rows
  std::vector<int32_t> order;
  order.reserve(size_t(T));
  std::vector<int64_t> count(size_t(n_adapters) + 1, 0);
  for (int64_t t = 0; t < T; t++)
    if (host_row_adapter[t] >= 0) count[size_t(host_row_adapter[t]) + 1]++;
  for (int64_t a = 0; a < n_adapters; a++) count[size_t(a) + 1] += count[size_t(a)];
  order.resize(size_t(count[size_t(n_adapters)]));
  if (order.empty()) return QL_OK;
  {
    std::vector<int64_t> pos(count.begin(), count.end() - 1);
    for (int64_t t = 0; t < T; t++)
      if (host_row_adapter[t] >= 0) order[size_t(pos[size_t(host_row_adapter[t])]++)] = int32_t(t);
  }
  std::vector<int3> segs;
  for (int64_t a = 0; a < n_adapters; a++)
    for (int64_t i = count[size_t(a)]; i < count[size_t(a) + 1]; i += kSegRows) {
      const int64_t n = count[size_t(a) + 1] - i < kSegRows ? count[size_t(a) + 1] - i : kSegRows;
      segs.push_back(int3{int(i), int(n), int(a)});
    }
  int max_rank = 1;
  for (int64_t a = 0; a < n_adapters; a++) max_rank = host_ranks[a] > max_rank ? host_ranks[a] : max_rank;
  Scratch d_seg(ctx, segs.size() * sizeof(int3)), d_order(ctx, order.size() * 4);
  st = copy_to_device(ctx, d_seg.ptr, segs.data(), segs.size() * sizeof(int3));
  if (st == QL_OK) st = copy_to_device(ctx, d_order.ptr, order.data(), order.size() * 4);
  if (st != QL_OK) return st;
  QL_LAUNCH(unsigned(segs.size()), 256, size_t(kSegRows) * max_rank * 4, stream(ctx), lora_sgmv_kernel)(
      y, x, d_seg.as<int3>(), d_order.as<int32_t>(), d_a.as<uint64_t>(), d_b.as<uint64_t>(), d_r.as<int32_t>(),
      d_s.as<float>(), in, out, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

}  // namespace ql::cuda
