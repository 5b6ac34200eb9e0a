// ops.cu — transformer elementwise/row kernels: embedding, RMSNorm, RoPE, SwiGLU, add, fused
// cross-entropy, KV-cache write, sum of squares, scale, top-k.
#include <cmath>
#include <vector>

#include "cuda/cuda.cuh"

namespace ql::cuda {

#define QL_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Reads n i32 from the device and checks them against [lo, hi) (hi exclusive), for the ids
// the contract validates before anything is written.
static ql_status check_ids(ql_ctx* ctx, const int32_t* ids, int64_t n, int64_t lo, int64_t hi, const char* fn,
                           const char* what) {
  std::vector<int32_t> h(static_cast<size_t>(n));
  ql_status st = copy_to_host(ctx, h.data(), ids, uint64_t(n) * 4);
  if (st != QL_OK) return st;
  for (int64_t t = 0; t < n; t++)
    if (h[t] < lo || h[t] >= hi)
      return ql_fail(QL_E_INVALID, "%s: %s[%lld] = %d is outside [%lld, %lld)", fn, what, (long long)t, h[t],
                     (long long)lo, (long long)hi);
  return QL_OK;
}

// ---------------------------------------------------------------- embedding
__global__ void embedding_fwd_kernel(void* out, int32_t dtype, const int32_t* ids, const void* table, int32_t tdtype,
                                     int64_t T, int64_t C) {
  QL_GRID_STRIDE(i, T * C) {
    const int64_t t = i / C, c = i % C;
    st(out, dtype, i, ld(table, tdtype, int64_t(ids[t]) * C + c));
  }
}
__global__ void embedding_bwd_kernel(float* dtable, const void* dout, int32_t dtype, const int32_t* ids, int64_t T,
                                     int64_t C) {
  QL_GRID_STRIDE(i, T * C) {
    const int64_t t = i / C, c = i % C;
    atomicAdd(&dtable[int64_t(ids[t]) * C + c], ld(dout, dtype, i));
  }
}
ql_status embedding_forward(ql_ctx* ctx, void* out, const int32_t* ids, const void* table, int64_t T, int64_t V,
                            int64_t C, int32_t dtype, int32_t table_dtype) {
  ql_status s = check_ids(ctx, ids, T, 0, V, "ql_embedding_forward", "ids");
  if (s != QL_OK) return s;
  QL_LAUNCH(grid_1d(T * C, 256), 256, 0, stream(ctx), embedding_fwd_kernel)(out, dtype, ids, table, table_dtype, T, C);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status embedding_backward(ql_ctx* ctx, float* dtable, const void* dout, const int32_t* ids, int64_t T, int64_t V,
                             int64_t C, int32_t dtype) {
  ql_status s = check_ids(ctx, ids, T, 0, V, "ql_embedding_backward", "ids");
  if (s != QL_OK) return s;
  QL_LAUNCH(grid_1d(T * C, 256), 256, 0, stream(ctx), embedding_bwd_kernel)(dtable, dout, dtype, ids, T, C);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- RMSNorm (block per row)
__global__ void __launch_bounds__(256) rmsnorm_fwd_kernel(void* out, float* rstd, const void* x, const float* w,
                                                          int64_t C, float eps, int32_t dtype) {
  QL_SHARED(float, scratch, 32);
  const int64_t t = blockIdx.x;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = ld(x, dtype, t * C + c);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float r = 1.0f / sqrtf(ss / float(C) + eps);
  if (rstd && threadIdx.x == 0) rstd[t] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out, dtype, t * C + c, ld(x, dtype, t * C + c) * r * w[c]);
}
__global__ void __launch_bounds__(256) rmsnorm_bwd_kernel(void* dx, const void* dout, const void* x, const float* w,
                                                          const float* rstd, int64_t C, int32_t dtype) {
  QL_SHARED(float, scratch, 32);
  const int64_t t = blockIdx.x;
  const float r = rstd[t];
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    s += w[c] * ld(dout, dtype, t * C + c) * ld(x, dtype, t * C + c);
  s = block_sum(s, scratch);
  const float k = r * r * r / float(C) * s;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t i = t * C + c;
    const float g = r * (w[c] * ld(dout, dtype, i)) - ld(x, dtype, i) * k;
    st(dx, dtype, i, ld(dx, dtype, i) + g);
  }
}
// dweight[c] += Σ_t dout·x·rstd: thread per column, rows in order (deterministic).
__global__ void rmsnorm_dw_kernel(float* dw, const void* dout, const void* x, const float* rstd, int64_t T, int64_t C,
                                  int32_t dtype) {
  QL_GRID_STRIDE(c, C) {
    float s = 0.0f;
    for (int64_t t = 0; t < T; t++) s += ld(dout, dtype, t * C + c) * ld(x, dtype, t * C + c) * rstd[t];
    dw[c] += s;
  }
}
ql_status rmsnorm_forward(ql_ctx* ctx, void* out, float* rstd, const void* x, const float* weight, int64_t T,
                          int64_t C, float eps, int32_t dtype) {
  QL_LAUNCH(unsigned(T), 256, 0, stream(ctx), rmsnorm_fwd_kernel)(out, rstd, x, weight, C, eps, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status rmsnorm_backward(ql_ctx* ctx, void* dx, float* dweight, const void* dout, const void* x,
                           const float* weight, const float* rstd, int64_t T, int64_t C, int32_t dtype) {
  if (dweight) {
    QL_LAUNCH(grid_1d(C, 128), 128, 0, stream(ctx), rmsnorm_dw_kernel)(dweight, dout, x, rstd, T, C, dtype);
    QL_LAUNCH_CHECK();
  }
  QL_LAUNCH(unsigned(T), 256, 0, stream(ctx), rmsnorm_bwd_kernel)(dx, dout, x, weight, rstd, C, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- RoPE (rotate_half pairs)
__global__ void rope_kernel(void* out, const void* x, const int32_t* pos, const float* inv_freq, int64_t T, int64_t Hn,
                            int64_t D, float sign, int32_t dtype) {
  const int64_t half = D / 2;
  QL_GRID_STRIDE(j, T * Hn * half) {
    const int64_t i = j % half, th = j / half, t = th / Hn;
    const float ang = float(pos[t]) * inv_freq[i];
    double sd, cd;
    sincos(double(ang), &sd, &cd);
    const float c = float(cd), s = sign * float(sd);
    const int64_t lo = th * D + i, hi = lo + half;
    const float a = ld(x, dtype, lo), b = ld(x, dtype, hi);
    st(out, dtype, lo, a * c - b * s);
    st(out, dtype, hi, b * c + a * s);
  }
}
ql_status rope_forward(ql_ctx* ctx, void* out, const void* x, const int32_t* positions, const float* inv_freq,
                       int64_t T, int64_t Hn, int64_t D, int32_t dtype) {
  QL_LAUNCH(grid_1d(T * Hn * (D / 2), 256), 256, 0, stream(ctx), rope_kernel)(out, x, positions, inv_freq, T, Hn, D,
                                                                                1.0f, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status rope_backward(ql_ctx* ctx, void* dx, const void* dout, const int32_t* positions, const float* inv_freq,
                        int64_t T, int64_t Hn, int64_t D, int32_t dtype) {
  QL_LAUNCH(grid_1d(T * Hn * (D / 2), 256), 256, 0, stream(ctx), rope_kernel)(dx, dout, positions, inv_freq, T, Hn, D,
                                                                               -1.0f, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- SwiGLU, add
__global__ void silu_fwd_kernel(void* out, const void* gate, const void* up, int64_t n, int32_t dtype) {
  QL_GRID_STRIDE(i, n) {
    const float g = ld(gate, dtype, i), u = ld(up, dtype, i);
    st(out, dtype, i, g / (1.0f + expf(-g)) * u);
  }
}
__global__ void silu_bwd_kernel(void* dgate, void* dup, const void* dout, const void* gate, const void* up, int64_t n,
                                int32_t dtype) {
  QL_GRID_STRIDE(i, n) {
    const float g = ld(gate, dtype, i), u = ld(up, dtype, i), d = ld(dout, dtype, i);
    const float sg = 1.0f / (1.0f + expf(-g));
    st(dgate, dtype, i, d * u * sg * (1.0f + g * (1.0f - sg)));
    st(dup, dtype, i, d * g * sg);
  }
}
__global__ void add_kernel(void* out, const void* a, const void* b, float alpha, int64_t n, int32_t dtype) {
  QL_GRID_STRIDE(i, n) st(out, dtype, i, ld(a, dtype, i) + alpha * ld(b, dtype, i));
}
ql_status silu_mul_forward(ql_ctx* ctx, void* out, const void* gate, const void* up, int64_t n, int32_t dtype) {
  QL_LAUNCH(grid_1d(n, 256), 256, 0, stream(ctx), silu_fwd_kernel)(out, gate, up, n, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status silu_mul_backward(ql_ctx* ctx, void* dgate, void* dup, const void* dout, const void* gate, const void* up,
                            int64_t n, int32_t dtype) {
  QL_LAUNCH(grid_1d(n, 256), 256, 0, stream(ctx), silu_bwd_kernel)(dgate, dup, dout, gate, up, n, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status add(ql_ctx* ctx, void* out, const void* a, const void* b, float alpha, int64_t n, int32_t dtype) {
  QL_LAUNCH(grid_1d(n, 256), 256, 0, stream(ctx), add_kernel)(out, a, b, alpha, n, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- fused cross-entropy (block per row)
__global__ void __launch_bounds__(256) cross_entropy_kernel(float* losses, void* dlogits, const void* logits,
                                                            const int32_t* targets, const float* weights,
                                                            float grad_scale, int64_t V, int32_t dtype) {
  QL_SHARED(float, scratch, 32);
  const int64_t t = blockIdx.x, base = t * V;
  const int32_t tgt = targets[t];
  if (tgt < 0) {
    if (threadIdx.x == 0) losses[t] = 0.0f;
    if (dlogits)
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) st(dlogits, dtype, base + i, 0.0f);
    return;
  }
  const float w = weights ? weights[t] : 1.0f;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, ld(logits, dtype, base + i));
  m = block_max(m, scratch);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += expf(ld(logits, dtype, base + i) - m);
  s = block_sum(s, scratch);
  const float xt = ld(logits, dtype, base + tgt);
  __syncthreads();  // every thread has read logits[tgt] before dlogits (maybe aliased) is written
  if (threadIdx.x == 0) losses[t] = w * (m + logf(s) - xt);
  if (dlogits) {
    const float c = grad_scale * w / s;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      float g = expf(ld(logits, dtype, base + i) - m) * c;
      if (i == tgt) g -= grad_scale * w;
      st(dlogits, dtype, base + i, g);
    }
  }
}
ql_status cross_entropy(ql_ctx* ctx, float* losses, void* dlogits, const void* logits, const int32_t* targets,
                        const float* weights, float grad_scale, int64_t T, int64_t V, int32_t dtype) {
  ql_status s = check_ids(ctx, targets, T, INT32_MIN, V, "ql_cross_entropy", "targets");
  if (s != QL_OK) return s;
  QL_LAUNCH(unsigned(T), 256, 0, stream(ctx), cross_entropy_kernel)(losses, dlogits, logits, targets, weights,
                                                                    grad_scale, V, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- KV cache write
__global__ void kv_write_kernel(void* kc, void* vc, const void* k, const void* v, const int32_t* slots, int64_t T,
                                int64_t row, int32_t dtype) {
  QL_GRID_STRIDE(i, T * row) {
    const int64_t t = i / row, j = i % row;
    const int32_t slot = slots[t];
    if (slot < 0) continue;
    const int64_t o = int64_t(slot) * row + j;
    if (dtype == QL_F32) {
      static_cast<float*>(kc)[o] = static_cast<const float*>(k)[i];
      static_cast<float*>(vc)[o] = static_cast<const float*>(v)[i];
    } else {
      static_cast<uint16_t*>(kc)[o] = static_cast<const uint16_t*>(k)[i];
      static_cast<uint16_t*>(vc)[o] = static_cast<const uint16_t*>(v)[i];
    }
  }
}
ql_status kv_cache_write(ql_ctx* ctx, void* k_cache, void* v_cache, const void* k, const void* v,
                         const int32_t* slots, int64_t T, int64_t num_blocks, int64_t block_size, int64_t Hkv,
                         int64_t D, int32_t dtype) {
  ql_status s = check_ids(ctx, slots, T, INT32_MIN, num_blocks * block_size, "ql_kv_cache_write", "slots");
  if (s != QL_OK) return s;
  QL_LAUNCH(grid_1d(T * Hkv * D, 256), 256, 0, stream(ctx), kv_write_kernel)(k_cache, v_cache, k, v, slots, T,
                                                                              Hkv * D, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- sum of squares, scale
__global__ void __launch_bounds__(256) sum_squares_kernel(float* out, const float* g, int64_t n) {
  QL_SHARED(float, scratch, 32);
  float s = 0.0f;
  QL_GRID_STRIDE(i, n) s += g[i] * g[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) atomicAdd(out, s);
}
__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  QL_GRID_STRIDE(i, n) x[i] *= alpha;
}
ql_status sum_squares(ql_ctx* ctx, float* out, const float* g, int64_t n) {
  unsigned grid = grid_1d(n, 256);
  if (grid > 1024) grid = 1024;
  QL_LAUNCH(grid, 256, 0, stream(ctx), sum_squares_kernel)(out, g, n);
  QL_LAUNCH_CHECK();
  return QL_OK;
}
ql_status scale(ql_ctx* ctx, float* x, float alpha, int64_t n) {
  QL_LAUNCH(grid_1d(n, 256), 256, 0, stream(ctx), scale_kernel)(x, alpha, n);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

// ---------------------------------------------------------------- top-k (block per row)
// k rounds of a block argmax over the entries that come after the previous pick in the order
// (value descending, id ascending). NaN entries are never picked.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}
__global__ void __launch_bounds__(256) topk_kernel(int32_t* out_ids, float* out_vals, const void* logits, int64_t V,
                                                   int64_t k, int32_t dtype) {
  QL_SHARED(float, sv, 32);
  QL_SHARED(int, si, 32);
  QL_SHARED(float, prev, 2);
  const int64_t b = blockIdx.x;
  float pv = INFINITY;
  int pi = -1;
  for (int64_t r = 0; r < k; r++) {
    float bv = -INFINITY;
    int bi = INT32_MAX;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float v = ld(logits, dtype, b * V + i);
      if (v != v) continue;
      if (before(pv, pi, v, int(i)) && before(v, int(i), bv, bi)) {
        bv = v;
        bi = int(i);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (before(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
      sv[threadIdx.x >> 5] = bv;
      si[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (unsigned w = 1; w < blockDim.x / 32; w++)
        if (before(sv[w], si[w], bv, bi)) {
          bv = sv[w];
          bi = si[w];
        }
      prev[0] = bv;
      prev[1] = __int_as_float(bi);
      out_ids[b * k + r] = bi == INT32_MAX ? -1 : bi;
      out_vals[b * k + r] = bv;
    }
    __syncthreads();
    pv = prev[0];
    pi = __float_as_int(prev[1]);
  }
}
ql_status topk(ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits, int64_t B, int64_t V, int64_t k,
               int32_t dtype) {
  QL_LAUNCH(unsigned(B), 256, 0, stream(ctx), topk_kernel)(out_ids, out_vals, logits, V, k, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

}  // namespace ql::cuda
