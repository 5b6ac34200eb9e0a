// lora_math.h — LoRA helpers shared by every backend (host C++, nvcc device code, CUDA emulation).
//
// Dropout mask (ql_lora_forward / ql_lora_backward): element (t, i) of x [T, in] is kept iff
//   lora_dropout_uniform(lora_dropout_key(seed), uint64_t(t) * in + i) >= p
// where
//   key = splitmix64(seed)                                (once per call)
//   h   = splitmix64(key + idx * 0x9E3779B97F4A7C15)      (per element; wrapping 64-bit arithmetic)
//   u   = float(h >> 40) * 2^-24                          (exact in float32, uniform in [0, 1))
// splitmix64(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
//                 z ^= z >> 31  (Steele/Lea/Flood's finalizer; integer-only, so every backend
// computes the same bits). Kept elements are multiplied by 1 / (1 - p) (float32 division).
#pragma once

#include <cstdint>

#include "common/quant_math.h"

namespace ql {

QL_HD uint64_t splitmix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

QL_HD uint64_t lora_dropout_key(uint64_t seed) { return splitmix64(seed); }

// Uniform in [0, 1) for element idx (= t * in + i) under key = lora_dropout_key(seed).
QL_HD float lora_dropout_uniform(uint64_t key, uint64_t idx) {
  const uint64_t h = splitmix64(key + idx * 0x9E3779B97F4A7C15ull);
  return float(uint32_t(h >> 40)) * 5.9604644775390625e-8f;  // 2^-24
}

QL_HD bool lora_dropout_keep(uint64_t key, uint64_t idx, float p) {
  return lora_dropout_uniform(key, idx) >= p;
}

}  // namespace ql
