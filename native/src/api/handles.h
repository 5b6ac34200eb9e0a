// handles.h — allocation of ql_ctx / ql_qweight / ql_optimizer handles and their liveness checks.
//
// Handle memory is never returned to the heap: a destroyed handle is marked dead (kDeadMagic,
// generation + 1) and queued; a slot is reused only once more than kQuarantine dead handles of
// its kind wait behind it. So a stale pointer keeps pointing at mapped memory that says "dead"
// (for at least kQuarantine later destroys), and checking it is one load and compare per call.
#pragma once

#include <deque>
#include <memory>
#include <mutex>

#include "backend.h"

namespace ql {

constexpr size_t kQuarantine = 1024;

inline std::mutex& handle_mutex() {
  static std::mutex* m = new std::mutex();  // leaked: usable during static destruction
  return *m;
}

template <class T>
std::deque<T*>& dead_handles() {
  static auto* q = new std::deque<T*>();
  return *q;
}

// A fresh live handle (default fields, its kind's magic), from a recycled slot when one is due.
template <class T>
T* handle_new() {
  {
    std::lock_guard<std::mutex> lock(handle_mutex());
    auto& q = dead_handles<T>();
    if (q.size() > kQuarantine) {
      T* h = q.front();
      q.pop_front();
      const uint32_t generation = h->generation;
      *h = T{};
      h->generation = generation;
      return h;
    }
  }
  return new T();
}

// Marks a handle dead and queues its memory for reuse. Call after its backend state is freed.
template <class T>
void handle_release(T* h) {
  T dead{};  // default fields, but never a live magic, not even while being copied in
  dead.magic = kDeadMagic;
  dead.generation = h->generation + 1;
  h->magic = kDeadMagic;
  std::lock_guard<std::mutex> lock(handle_mutex());
  *h = std::move(dead);
  dead_handles<T>().push_back(h);
}

// Owns a handle under construction: released (never freed) unless handed out.
template <class T>
struct HandleReleaser {
  void operator()(T* h) const { handle_release(h); }
};
template <class T>
using HandleOwner = std::unique_ptr<T, HandleReleaser<T>>;

inline bool ctx_live(const ql_ctx* c) { return c->magic == kCtxMagic; }
// A weight or optimizer whose context is still the one it was made on.
template <class T>
bool parent_live(const T* h) {
  return h->ctx->magic == kCtxMagic && h->ctx->generation == h->ctx_generation;
}

}  // namespace ql
