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

template <class Keys>
__global__ void __launch_bounds__(kAttnThreads) attn_bwd_kernel(void* dq, float* dk_f, float* dv_f, const void* dout,
                                                                 const void* out, const float* lse, const void* q,
                                                                 const void* kbuf, const void* vbuf, Keys keys, int H,
                                                                 int group, int D, float scale, int32_t dtype) {
  QL_DYN_SHARED(float, smem);
  float* q_s = smem;                 // [D]
  float* do_s = smem + D;            // [D]
  float* dq_s = smem + 2 * D;        // [D]
  float* p_s = smem + 3 * D;         // [blockDim.x]
  float* ds_s = p_s + blockDim.x;    // [blockDim.x]
  float* red = ds_s + blockDim.x;    // [32]
  const int t = blockIdx.x / H, h = blockIdx.x % H, kvh = h / group;
  const int64_t qoff = (int64_t(t) * H + h) * D;
  float delta = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    q_s[d] = ld(q, dtype, qoff + d);
    const float g = ld(dout, dtype, qoff + d);
    do_s[d] = g;
    dq_s[d] = 0.0f;
    delta += g * ld(out, dtype, qoff + d);
  }
  delta = block_sum(delta, red);  // also publishes q_s / do_s
  const float L = lse[int64_t(t) * H + h];
  const int64_t n = keys.nkeys(t);
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    float p = 0.0f, ds = 0.0f;
    if (j < n) {
      const int64_t ko = keys.offset(t, j, kvh);
      float sk = 0.0f, dp = 0.0f;
      for (int d = 0; d < D; d++) {
        sk += q_s[d] * ld(kbuf, dtype, ko + d);
        dp += do_s[d] * ld(vbuf, dtype, ko + d);
      }
      p = expf(sk * scale - L);
      ds = p * (dp - delta);
    }
    p_s[threadIdx.x] = p;
    ds_s[threadIdx.x] = ds;
    __syncthreads();
    const int64_t cnt = n - j0 < int64_t(blockDim.x) ? n - j0 : int64_t(blockDim.x);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = dq_s[d];
      const float qd = q_s[d] * scale, gd = do_s[d];
      for (int64_t jj = 0; jj < cnt; jj++) {
        const int64_t ko = keys.offset(t, j0 + jj, kvh);
        a += ds_s[jj] * ld(kbuf, dtype, ko + d);
        atomicAdd(&dk_f[ko + d], ds_s[jj] * qd);
        atomicAdd(&dv_f[ko + d], p_s[jj] * gd);
      }
      dq_s[d] = a;
    }
    __syncthreads();
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) st(dq, dtype, qoff + d, dq_s[d] * scale);
}

__global__ void f32_to_act_kernel(void* out, const float* in, int64_t n, int32_t dtype) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(out, dtype, i, in[i]);
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
  const int64_t nkv = T * Hkv * D;
  Scratch d_rows(ctx, uint64_t(T) * sizeof(int2));
  Scratch dk_f(ctx, uint64_t(nkv) * 4), dv_f(ctx, uint64_t(nkv) * 4);
  ql_status st = packed_rows(ctx, d_rows, host_cu_seqlens, S, T);
  if (st != QL_OK) return st;
  QL_CUDA_TRY(cudaMemsetAsync(dk_f.ptr, 0, uint64_t(nkv) * 4, stream(ctx)));
  QL_CUDA_TRY(cudaMemsetAsync(dv_f.ptr, 0, uint64_t(nkv) * 4, stream(ctx)));
  PackedKeys keys{d_rows.as<int2>(), Hkv, D};
  const size_t shmem = size_t(3 * D + 2 * kAttnThreads + 32) * 4;
  QL_LAUNCH(unsigned(T * H), kAttnThreads, shmem, stream(ctx), attn_bwd_kernel<PackedKeys>)(
      dq, dk_f.as<float>(), dv_f.as<float>(), dout, out, lse, q, k, v, keys, int(H), int(H / Hkv), int(D),
      softmax_scale, dtype);
  QL_LAUNCH_CHECK();
  QL_LAUNCH(grid_1d(nkv, 256), 256, 0, stream(ctx), f32_to_act_kernel)(dk, dk_f.as<float>(), nkv, dtype);
  QL_LAUNCH(grid_1d(nkv, 256), 256, 0, stream(ctx), f32_to_act_kernel)(dv, dv_f.as<float>(), nkv, dtype);
  QL_LAUNCH_CHECK();
  return QL_OK;
}

}  // namespace ql::cuda
