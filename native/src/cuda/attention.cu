// attention.cu — paged attention over the KV cache (prefill + decode in one call, GQA) and the
// training attention forward/backward on packed sequences. One thread block per (query row,
// head); keys are streamed in chunks of blockDim.x with an online (flash-style) softmax; each
// thread owns head dims d ≡ threadIdx.x (mod blockDim.x) of the accumulator.
#include <vector>

#include "cuda/cuda.cuh"

namespace ql::cuda {

constexpr int kAttnThreads = 128;

// Where key j of a query row lives: element offset of its [D] vector for kv head kvh.
struct PagedKeys {
  const int32_t* tables;  // [S, max_blocks]
  const int2* rows;       // per query row: (sequence, absolute position)
  int max_blocks, block_size, Hkv, D;  // num_blocks * block_size fits in i32 (api check)
  __device__ __forceinline__ int64_t offset(int t, int64_t j, int kvh) const {
    const int s = rows[t].x;
    const int jj = int(j);
    const int64_t slot = int64_t(tables[int64_t(s) * max_blocks + jj / block_size]) * block_size + jj % block_size;
    return (slot * Hkv + kvh) * D;
  }
  __device__ __forceinline__ int64_t nkeys(int t) const { return int64_t(rows[t].y) + 1; }
};
struct PackedKeys {
  const int2* rows;  // per query row: (first row of its sequence, position inside it)
  int64_t Hkv, D;
  __device__ __forceinline__ int64_t offset(int t, int64_t j, int kvh) const {
    return ((int64_t(rows[t].x) + j) * Hkv + kvh) * D;
  }
  __device__ __forceinline__ int64_t nkeys(int t) const { return int64_t(rows[t].y) + 1; }
};

template <class Keys>
__global__ void __launch_bounds__(kAttnThreads) attn_fwd_kernel(void* out, float* lse, const void* q, const void* kbuf,
                                                                 const void* vbuf, Keys keys, int H, int group, int D,
                                                                 float scale, int32_t dtype) {
  QL_DYN_SHARED(float, smem);
  float* q_s = smem;           // [D]
  float* acc = smem + D;       // [D]
  float* p_s = smem + 2 * D;   // [blockDim.x]
  float* red = p_s + blockDim.x;  // [32]
  const int t = blockIdx.x / H, h = blockIdx.x % H, kvh = h / group;
  const int64_t qoff = (int64_t(t) * H + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    q_s[d] = ld(q, dtype, qoff + d);
    acc[d] = 0.0f;
  }
  __syncthreads();
  const int64_t n = keys.nkeys(t);
  float m = -INFINITY, l = 0.0f;
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    float s = -INFINITY;
    if (j < n) {
      const int64_t ko = keys.offset(t, j, kvh);
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot += q_s[d] * ld(kbuf, dtype, ko + d);
      s = dot * scale;
    }
    const float m_new = fmaxf(m, block_max(s, red));
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float p = j < n ? expf(s - m_new) : 0.0f;
    p_s[threadIdx.x] = p;
    l = l * corr + block_sum(p, red);  // block_sum's barriers publish p_s
    const int64_t cnt = n - j0 < int64_t(blockDim.x) ? n - j0 : int64_t(blockDim.x);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = acc[d] * corr;
      for (int64_t jj = 0; jj < cnt; jj++) a += p_s[jj] * ld(vbuf, dtype, keys.offset(t, j0 + jj, kvh) + d);
      acc[d] = a;
    }
    m = m_new;
    __syncthreads();  // p_s is rewritten by the next chunk
  }
  const float inv = 1.0f / l;
  for (int d = threadIdx.x; d < D; d += blockDim.x) st(out, dtype, qoff + d, acc[d] * inv);
  if (lse && threadIdx.x == 0) lse[int64_t(t) * H + h] = m + logf(l);
}

// Backward in three deterministic passes (no atomics):
//   delta[t, h] = Σ_d dout · out
//   dq (block per query row and head): dq_i = scale · Σ_j ds_ij k_j
//   dk, dv (block per key row and kv head, over every query row of its group at or after it):
//     dv_j = Σ_h Σ_i p_ij dout_i,  dk_j = scale · Σ_h Σ_i ds_ij q_i
// with p_ij = exp(scale · q_i·k_j − lse_i), ds_ij = p_ij (dout_i·v_j − delta_i).
__global__ void attn_delta_kernel(float* delta, const void* dout, const void* out, int64_t rows, int D, int32_t dtype) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= rows) return;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += ld(dout, dtype, row * D + d) * ld(out, dtype, row * D + d);
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

__global__ void __launch_bounds__(kAttnThreads) attn_bwd_dq_kernel(void* dq, const float* delta, const void* dout,
                                                                    const float* lse, const void* q, const void* kbuf,
                                                                    const void* vbuf, PackedKeys keys, int H, int group,
                                                                    int D, float scale, int32_t dtype) {
  QL_DYN_SHARED(float, smem);
  float* q_s = smem;               // [D]
  float* do_s = smem + D;          // [D]
  float* dq_s = smem + 2 * D;      // [D]
  float* ds_s = smem + 3 * D;      // [blockDim.x]
  const int t = blockIdx.x / H, h = blockIdx.x % H, kvh = h / group;
  const int64_t qoff = (int64_t(t) * H + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    q_s[d] = ld(q, dtype, qoff + d);
    do_s[d] = ld(dout, dtype, qoff + d);
    dq_s[d] = 0.0f;
  }
  __syncthreads();
  const float L = lse[int64_t(t) * H + h], dl = delta[int64_t(t) * H + h];
  const int64_t n = keys.nkeys(t);
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    float ds = 0.0f;
    if (j < n) {
      const int64_t ko = keys.offset(t, j, kvh);
      float sk = 0.0f, dp = 0.0f;
      for (int d = 0; d < D; d++) {
        sk += q_s[d] * ld(kbuf, dtype, ko + d);
        dp += do_s[d] * ld(vbuf, dtype, ko + d);
      }
      const float p = expf(sk * scale - L);
      ds = p * (dp - dl);
    }
    ds_s[threadIdx.x] = ds;
    __syncthreads();
    const int64_t cnt = n - j0 < int64_t(blockDim.x) ? n - j0 : int64_t(blockDim.x);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = dq_s[d];
      for (int64_t jj = 0; jj < cnt; jj++) a += ds_s[jj] * ld(kbuf, dtype, keys.offset(t, j0 + jj, kvh) + d);
      dq_s[d] = a;
    }
    __syncthreads();
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) st(dq, dtype, qoff + d, dq_s[d] * scale);
}

// rows: per key row (first row of its sequence, position inside it); seq_end: per key row, one
// past the last row of its sequence.
__global__ void __launch_bounds__(kAttnThreads) attn_bwd_dkv_kernel(void* dk, void* dv, const float* delta,
                                                                     const void* dout, const float* lse, const void* q,
                                                                     const void* kbuf, const void* vbuf,
                                                                     const int* seq_end, int Hkv, int group, int D,
                                                                     float scale, int32_t dtype) {
  QL_DYN_SHARED(float, smem);
  float* k_s = smem;               // [D]
  float* v_s = smem + D;           // [D]
  float* dk_s = smem + 2 * D;      // [D]
  float* dv_s = smem + 3 * D;      // [D]
  float* p_s = smem + 4 * D;       // [blockDim.x]
  float* ds_s = p_s + blockDim.x;  // [blockDim.x]
  const int j = blockIdx.x / Hkv, kvh = blockIdx.x % Hkv;
  const int H = Hkv * group;
  const int64_t koff = (int64_t(j) * Hkv + kvh) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    k_s[d] = ld(kbuf, dtype, koff + d);
    v_s[d] = ld(vbuf, dtype, koff + d);
    dk_s[d] = 0.0f;
    dv_s[d] = 0.0f;
  }
  __syncthreads();
  const int end = seq_end[j];
  for (int g = 0; g < group; g++) {
    const int h = kvh * group + g;
    for (int i0 = j; i0 < end; i0 += blockDim.x) {
      const int i = i0 + int(threadIdx.x);
      float p = 0.0f, ds = 0.0f;
      if (i < end) {
        const int64_t qo = (int64_t(i) * H + h) * D;
        float sk = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          sk += ld(q, dtype, qo + d) * k_s[d];
          dp += ld(dout, dtype, qo + d) * v_s[d];
        }
        p = expf(sk * scale - lse[int64_t(i) * H + h]);
        ds = p * (dp - delta[int64_t(i) * H + h]);
      }
      p_s[threadIdx.x] = p;
      ds_s[threadIdx.x] = ds;
      __syncthreads();
      const int cnt = end - i0 < int(blockDim.x) ? end - i0 : int(blockDim.x);
      for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = dk_s[d], b = dv_s[d];
        for (int ii = 0; ii < cnt; ii++) {
          const int64_t qo = (int64_t(i0 + ii) * H + h) * D + d;
          a += ds_s[ii] * ld(q, dtype, qo);
          b += p_s[ii] * ld(dout, dtype, qo);
        }
        dk_s[d] = a;
        dv_s[d] = b;
      }
      __syncthreads();
    }
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    st(dk, dtype, koff + d, dk_s[d] * scale);
    st(dv, dtype, koff + d, dv_s[d]);
  }
}

ql_status attention_paged(ql_ctx* ctx, void* out, const void* q, const void* k_cache, const void* v_cache,
                          const int32_t* host_block_tables, const int32_t* host_q_start,
                          const int32_t* host_ctx_lens, int64_t S, int64_t max_blocks, int64_t num_blocks,
                          int64_t block_size, int64_t H, int64_t Hkv, int64_t D, float softmax_scale,
                          int32_t dtype) {
  const int64_t T = host_q_start[S];
  if (T == 0) return QL_OK;
  std::vector<int2> rows(static_cast<size_t>(T));
  for (int64_t s = 0; s < S; s++) {
    const int q_len = host_q_start[s + 1] - host_q_start[s];
    for (int i = 0; i < q_len; i++) {
      rows[host_q_start[s] + i].x = int(s);
      rows[host_q_start[s] + i].y = host_ctx_lens[s] - q_len + i;
    }
  }
  Scratch d_rows(ctx, rows.size() * sizeof(int2));
  Scratch d_tables(ctx, uint64_t(S * max_blocks) * 4);
  ql_status st = copy_to_device(ctx, d_rows.ptr, rows.data(), rows.size() * sizeof(int2));
  if (st == QL_OK) st = copy_to_device(ctx, d_tables.ptr, host_block_tables, uint64_t(S * max_blocks) * 4);
  if (st != QL_OK) return st;
  PagedKeys keys{d_tables.as<int32_t>(), d_rows.as<int2>(), int(max_blocks), int(block_size), int(Hkv), int(D)};
  const size_t shmem = size_t(2 * D + kAttnThreads + 32) * 4;
  QL_LAUNCH(unsigned(T * H), kAttnThreads, shmem, stream(ctx), attn_fwd_kernel<PagedKeys>)(
      out, nullptr, q, k_cache, v_cache, keys, int(H), int(H / Hkv), int(D), softmax_scale, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

static ql_status packed_rows(ql_ctx* ctx, Scratch& d_rows, const int32_t* cu, int64_t S, int64_t T) {
  std::vector<int2> rows(static_cast<size_t>(T));
  for (int64_t s = 0; s < S; s++)
    for (int32_t t = cu[s]; t < cu[s + 1]; t++) {
      rows[t].x = cu[s];
      rows[t].y = t - cu[s];
    }
  return copy_to_device(ctx, d_rows.ptr, rows.data(), rows.size() * sizeof(int2));
}

ql_status attention_forward(ql_ctx* ctx, void* out, float* lse, const void* q, const void* k, const void* v,
                            const int32_t* host_cu_seqlens, int64_t S, int64_t T, int64_t H, int64_t Hkv, int64_t D,
                            float softmax_scale, int32_t dtype) {
  if (T == 0) return QL_OK;
  Scratch d_rows(ctx, uint64_t(T) * sizeof(int2));
  ql_status st = packed_rows(ctx, d_rows, host_cu_seqlens, S, T);
  if (st != QL_OK) return st;
  PackedKeys keys{d_rows.as<int2>(), Hkv, D};
  const size_t shmem = size_t(2 * D + kAttnThreads + 32) * 4;
  QL_LAUNCH(unsigned(T * H), kAttnThreads, shmem, stream(ctx), attn_fwd_kernel<PackedKeys>)(
      out, lse, q, k, v, keys, int(H), int(H / Hkv), int(D), softmax_scale, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

ql_status attention_backward(ql_ctx* ctx, void* dq, void* dk, void* dv, const void* dout, const void* out,
                             const float* lse, const void* q, const void* k, const void* v,
                             const int32_t* host_cu_seqlens, int64_t S, int64_t T, int64_t H, int64_t Hkv, int64_t D,
                             float softmax_scale, int32_t dtype) {
  if (T == 0) return QL_OK;
  Scratch d_rows(ctx, uint64_t(T) * sizeof(int2)), d_end(ctx, uint64_t(T) * 4), delta(ctx, uint64_t(T * H) * 4);
  ql_status st = packed_rows(ctx, d_rows, host_cu_seqlens, S, T);
  if (st != QL_OK) return st;
  std::vector<int> ends(static_cast<size_t>(T));
  for (int64_t s = 0; s < S; s++)
    for (int32_t t = host_cu_seqlens[s]; t < host_cu_seqlens[s + 1]; t++) ends[t] = host_cu_seqlens[s + 1];
  st = copy_to_device(ctx, d_end.ptr, ends.data(), ends.size() * 4);
  if (st != QL_OK) return st;
  QL_LAUNCH(grid_1d(T * H * 32, 256), 256, 0, stream(ctx), attn_delta_kernel)(delta.as<float>(), dout, out, T * H,
                                                                              int(D), dtype);
  QL_LAUNCH_CHECK();
  PackedKeys keys{d_rows.as<int2>(), Hkv, D};
  QL_LAUNCH(unsigned(T * H), kAttnThreads, size_t(3 * D + kAttnThreads) * 4, stream(ctx), attn_bwd_dq_kernel)(
      dq, delta.as<float>(), dout, lse, q, k, v, keys, int(H), int(H / Hkv), int(D), softmax_scale, dtype);
  QL_LAUNCH_CHECK();
  QL_LAUNCH(unsigned(T * Hkv), kAttnThreads, size_t(4 * D + 2 * kAttnThreads) * 4, stream(ctx), attn_bwd_dkv_kernel)(
      dk, dv, delta.as<float>(), dout, lse, q, k, v, d_end.as<int>(), int(Hkv), int(H / Hkv), int(D), softmax_scale,
      dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

}  // namespace ql::cuda
