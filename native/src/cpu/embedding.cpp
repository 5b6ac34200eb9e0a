// embedding.cpp — token embedding lookup and its scatter-add backward.
#include <algorithm>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

ql_status embedding_forward(ql_ctx* ctx, void* out, const int32_t* ids, const void* table,
                            int64_t T, int64_t V, int64_t C, int32_t dtype, int32_t table_dtype) {
  for (int64_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= V)
      return ql_fail(QL_E_INVALID, "ql_embedding_forward: ids[%lld] = %d is outside [0, %lld)",
                     (long long)t, ids[t], (long long)V);
#pragma omp parallel num_threads(threads(ctx)) if (T * C > 16384)
  {
    std::vector<float> row(dtype == table_dtype ? 0 : size_t(C));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      const int64_t src = int64_t(ids[t]) * C;
      if (dtype == table_dtype) {
        memcpy(elem(out, dtype, t * C), elem(table, dtype, src), size_t(C) * act_size(dtype));
      } else {
        load_row(row.data(), table, table_dtype, src, C);
        store_row(out, dtype, t * C, row.data(), C);
      }
    }
  }
  return QL_OK;
}

// Deterministic: each thread owns a range of columns and walks the tokens in order.
ql_status embedding_backward(ql_ctx* ctx, float* dtable, const void* dout, const int32_t* ids,
                             int64_t T, int64_t V, int64_t C, int32_t dtype) {
  for (int64_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= V)
      return ql_fail(QL_E_INVALID, "ql_embedding_backward: ids[%lld] = %d is outside [0, %lld)",
                     (long long)t, ids[t], (long long)V);
  const int64_t chunk = 256;
  const int64_t nchunks = (C + chunk - 1) / chunk;
#pragma omp parallel num_threads(threads(ctx)) if (T * C > 16384)
  {
    float row[chunk];
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
      const int64_t c0 = c * chunk, n = std::min(chunk, C - c0);
      for (int64_t t = 0; t < T; t++) {
        load_row(row, dout, dtype, t * C + c0, n);
        float* d = dtable + int64_t(ids[t]) * C + c0;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
          _mm256_storeu_ps(d + i, _mm256_add_ps(_mm256_loadu_ps(d + i), _mm256_loadu_ps(row + i)));
        for (; i < n; i++) d[i] += row[i];
      }
    }
  }
  return QL_OK;
}

}  // namespace ql::cpu
