// selftest.cu — test-only entry points of the cudaemu library (qlemu_selftest_*; not part of
// qlora.h), used by tests/native/emu_test.ts to show that the emulation catches the bugs it
// exists for (a missing __syncthreads(), a wrong shared-memory index) and that its warp
// collectives, atomics and WMMA behave. Pointers are host memory (the emulation's device memory).
#if defined(QL_CUDA_EMU)
#include "cuda/cuda.cuh"

namespace {

// out[i] = in[n - 1 - i] through shared memory. variant 0: correct; 1: no barrier between the
// shared write and the read; 2: off-by-one shared index; 3: the two halves of the block wait
// in different __syncthreads() calls.
__global__ void reverse_kernel(float* out, const float* in, int n, int variant) {
  QL_SHARED(float, tile, 1024);
  const int t = threadIdx.x;
  tile[t] = in[t];
  if (variant == 3) {  // divergent barriers: lower half and upper half wait in different calls
    if (t < n / 2) {
      __syncthreads();
      out[t] = tile[n - 1 - t] + 0.0f;
    } else {
      __syncthreads();
      out[t] = tile[n - 1 - t];
    }
    return;
  }
  if (variant != 1) __syncthreads();
  out[t] = variant == 2 ? tile[n - t] : tile[n - 1 - t];
}

// Σ in over several blocks: warp shuffles, a shared partial per warp, one atomicAdd per block.
__global__ void sum_kernel(float* out, const float* in, int64_t n) {
  QL_SHARED(float, scratch, 32);
  float s = 0.0f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) s += in[i];
  s = ql::cuda::block_sum(s, scratch);
  if (threadIdx.x == 0) atomicAdd(out, s);
}

// One warp: ballot of pred, any/all, and shfl_down / shfl_sync / shfl_xor results.
__global__ void warp_kernel(unsigned* out, const int* pred, const int* vals) {
  const int lane = threadIdx.x;
  const unsigned b = __ballot_sync(0xffffffffu, pred[lane]);
  const int any = __any_sync(0xffffffffu, pred[lane]);
  const int all = __all_sync(0xffffffffu, pred[lane]);
  const int down = __shfl_down_sync(0xffffffffu, vals[lane], 1);
  const int bcast = __shfl_sync(0xffffffffu, vals[lane], 5);
  const int x = __shfl_xor_sync(0xffffffffu, vals[lane], 3);
  if (lane == 0) {
    out[0] = b;
    out[1] = unsigned(any);
    out[2] = unsigned(all);
  }
  out[3 + lane] = unsigned(down);
  out[35 + lane] = unsigned(bcast);
  out[67 + lane] = unsigned(x);
}

// C[16, 16] = A[16, 16] · B[16, 16] (bf16 bits, row-major) on one warp with WMMA.
__global__ void wmma_kernel(float* c, const uint16_t* a, const uint16_t* b) {
  namespace wmma = nvcuda::wmma;
  QL_SHARED(__nv_bfloat16, as, 256);
  QL_SHARED(__nv_bfloat16, bs, 256);
  for (int i = threadIdx.x; i < 256; i += 32) {
    as[i] = __ushort_as_bfloat16(a[i]);
    bs[i] = __ushort_as_bfloat16(b[i]);
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, as, 16);
  wmma::load_matrix_sync(fb, bs, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

}  // namespace

extern "C" {

// 1: run the threads of a warp (and the warps of a block) in reverse order between barriers.
QL_API void qlemu_selftest_set_reverse(int reverse) { ql_emu::set_reverse_schedule(reverse != 0); }

// 1: a launch whose threads wait in different __syncthreads() calls fails.
QL_API void qlemu_selftest_set_check(int on) { ql_emu::set_barrier_check(on != 0); }

// n in [1, 1024]; variant 3: divergent __syncthreads(); returns the launch status.
QL_API int qlemu_selftest_reverse(float* out, const float* in, int n, int variant) {
  QL_LAUNCH(1, n, 0, nullptr, reverse_kernel)(out, in, n, variant);
  return int(cudaGetLastError());
}
QL_API int qlemu_selftest_sum(float* out, const float* in, int64_t n, int blocks, int threads) {
  *out = 0.0f;
  QL_LAUNCH(blocks, threads, 0, nullptr, sum_kernel)(out, in, n);
  return int(cudaGetLastError());
}
// out [99]: ballot, any, all, shfl_down[32], shfl(5)[32], shfl_xor(3)[32].
QL_API int qlemu_selftest_warp(unsigned* out, const int* pred, const int* vals) {
  QL_LAUNCH(1, 32, 0, nullptr, warp_kernel)(out, pred, vals);
  return int(cudaGetLastError());
}
QL_API int qlemu_selftest_wmma(float* c, const uint16_t* a, const uint16_t* b) {
  QL_LAUNCH(1, 32, 0, nullptr, wmma_kernel)(c, a, b);
  return int(cudaGetLastError());
}

}  // extern "C"
#endif
