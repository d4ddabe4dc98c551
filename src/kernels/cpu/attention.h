#pragma once
// Decode/prefill attention of the query heads that share one KV head, against positions [0, n)
// of the cache, for each KV cache type:
//   s[p] = (q . k[p]) / sqrt(head_dim),  e[p] = exp(s[p] - max s),  out = (sum_p e[p] v[p]) / sum e
// Keys are stored in blocks of 16 positions ([block][head_dim][16]) so a SIMD lane is a position
// and q . k needs no horizontal sums; values stay [pos][head_dim] so a lane is a dimension. Every
// dot product and sum runs in the order of canonical_math.h (each lane sequentially with fma), so
// the scalar, AVX2 and AVX-512 kernels agree bit for bit.

#include <cstdint>

#include "base/cpu_features.h"
#include "bitnet/session.h"

namespace bitnet {

constexpr int kKeyBlock = 16;  // positions side by side in a key block

// One (slot, layer, kv_head) of the cache. q8 stores int8 codes with one fp32 scale per
// position (absmax / 127) for keys and for values.
struct KvHeadView {
  KvCacheType type = KvCacheType::f32;
  int head_dim = 0;
  const void* keys = nullptr;           // [blocks][head_dim][kKeyBlock] of float/fp16/int8
  const void* values = nullptr;         // [pos][head_dim] of float/fp16/int8
  const float* key_scales = nullptr;    // q8: [blocks * kKeyBlock]
  const float* value_scales = nullptr;  // q8: [pos]
};

// Floats of scratch the kernels need for n_q heads over n_pos positions.
inline int64_t attention_scratch_floats(int n_q, int n_pos) {
  return static_cast<int64_t>(n_q) * ((n_pos + kKeyBlock - 1) / kKeyBlock * kKeyBlock);
}

// q: n_q query heads [n_q][head_dim] (contiguous); out: [n_q][head_dim]; n_pos >= 1.
using AttentionKernel = void (*)(const KvHeadView& kv, int n_pos, const float* q, int n_q,
                                 float* out, float* scratch);

void attention_scalar(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                      float* scratch);
// The SIMD kernels need head_dim % 16 == 0; other sizes get the scalar kernel.
AttentionKernel attention_kernel(CpuIsa isa, int head_dim);

}  // namespace bitnet
