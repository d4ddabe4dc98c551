#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "base/float16.h"
#include "kernels/cpu/canonical_math.h"

namespace bitnet {
namespace {

float element(KvCacheType type, const void* base, int64_t i) {
  switch (type) {
    case KvCacheType::f32:
      return static_cast<const float*>(base)[i];
    case KvCacheType::f16:
      return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case KvCacheType::q8:
      return static_cast<float>(static_cast<const int8_t*>(base)[i]);
  }
  return 0.0f;
}

}  // namespace

void attention_scalar(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                      float* scratch) {
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos);
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  const bool q8 = kv.type == KvCacheType::q8;
  for (int h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * hd;
    float* e = scratch + h * stride;
    float max_s = -INFINITY;
    for (int p = 0; p < n_pos; ++p) {
      const int64_t block = static_cast<int64_t>(p / kKeyBlock) * hd * kKeyBlock;
      float acc = 0.0f;
      for (int i = 0; i < hd; ++i)
        acc =
            std::fma(qh[i], element(kv.type, kv.keys, block + i * kKeyBlock + p % kKeyBlock), acc);
      e[p] = acc * (q8 ? kv.key_scales[p] * inv_sqrt : inv_sqrt);
      max_s = std::max(max_s, e[p]);
    }
    float lane[kLanes] = {};
    for (int p = 0; p < n_pos; ++p) {
      e[p] = exp_nonpositive(e[p] - max_s);
      lane[p % kLanes] += e[p];
    }
    const float inv_sum = 1.0f / reduce_lanes(lane);
    float* oh = out + static_cast<int64_t>(h) * hd;
    for (int d = 0; d < hd; ++d) {
      float acc = 0.0f;
      for (int p = 0; p < n_pos; ++p) {
        const float w = q8 ? e[p] * kv.value_scales[p] : e[p];
        acc = std::fma(w, element(kv.type, kv.values, static_cast<int64_t>(p) * hd + d), acc);
      }
      oh[d] = acc * inv_sum;
    }
  }
}

// Defined in attention_avx2.cpp / attention_avx512.cpp.
void attention_avx2(const KvHeadView&, int, const float*, int, float*, float*);
void attention_avx512(const KvHeadView&, int, const float*, int, float*, float*);

AttentionKernel attention_kernel(CpuIsa isa, int head_dim) {
  if (head_dim % kLanes != 0) return attention_scalar;
  switch (isa) {
    case CpuIsa::avx512_vnni:
      return attention_avx512;
    case CpuIsa::avx2:
      return attention_avx2;
    case CpuIsa::scalar:
      break;
  }
  return attention_scalar;
}

}  // namespace bitnet
