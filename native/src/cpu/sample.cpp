// sample.cpp — top-k per row (descending, ties: lower id first).
#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/ops.h"

namespace ql::cpu {

namespace {

// Order of "better": larger value, then lower id. NaN counts as below every number.
inline bool better(float a, int32_t ia, float b, int32_t ib) {
  const bool na = a != a, nb = b != b;
  if (na || nb) return !na && nb ? true : (na && nb ? ia < ib : false);
  return a > b || (a == b && ia < ib);
}

}  // namespace

ql_status topk(ql_ctx* ctx, int32_t* out_ids, float* out_vals, const void* logits, int64_t B,
               int64_t V, int64_t k, int32_t dtype) {
#pragma omp parallel num_threads(threads(ctx)) if (B > 1 && B * V > 16384)
  {
    std::vector<float> row(static_cast<size_t>(V));
    std::vector<std::pair<float, int32_t>> heap;
    heap.reserve(size_t(k));
    // Min-heap on "better": the root is the worst kept entry.
    auto cmp = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
      return better(a.first, a.second, b.first, b.second);
    };
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++) {
      load_row(row.data(), logits, dtype, b * V, V);
      heap.clear();
      for (int64_t i = 0; i < V; i++) {
        const float v = row[size_t(i)];
        if (int64_t(heap.size()) < k) {
          heap.emplace_back(v, int32_t(i));
          std::push_heap(heap.begin(), heap.end(), cmp);
        } else if (better(v, int32_t(i), heap.front().first, heap.front().second)) {
          std::pop_heap(heap.begin(), heap.end(), cmp);
          heap.back() = {v, int32_t(i)};
          std::push_heap(heap.begin(), heap.end(), cmp);
        }
      }
      std::sort(heap.begin(), heap.end(), cmp);
      for (int64_t j = 0; j < k; j++) {
        out_ids[b * k + j] = heap[size_t(j)].second;
        out_vals[b * k + j] = heap[size_t(j)].first;
      }
    }
  }
  return QL_OK;
}

}  // namespace ql::cpu
