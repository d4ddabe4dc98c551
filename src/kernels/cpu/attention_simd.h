#pragma once
// What the AVX2 and AVX-512 attention kernels share: the AttentionKernel passes over groups of
// up to four query heads (each K and V load serves the whole group) for every cache type. An ISA
// supplies, as static member templates of P,
//   score_range<T, H>(kv, b0, b1, q, s, stride)               scores of H heads, blocks [b0, b1)
//   value_range<T, H>(kv, n_pos, d0, d1, s, e, stride, out)   out of H heads, dimensions [d0, d1)
// with stride = attention_scratch_floats(1, n_pos).

#include <algorithm>

#include "kernels/cpu/attention.h"

namespace bitnet {

template <class P>
struct SimdAttention {
  // Calls fn.template operator()<H>(h0) for the groups of H <= 4 heads starting at h0.
  template <class Fn>
  static void head_groups(int n_q, Fn&& fn) {
    for (int h0 = 0; h0 < n_q; h0 += 4) {
      switch (std::min(4, n_q - h0)) {
        case 1:
          fn.template operator()<1>(h0);
          break;
        case 2:
          fn.template operator()<2>(h0);
          break;
        case 3:
          fn.template operator()<3>(h0);
          break;
        default:
          fn.template operator()<4>(h0);
          break;
      }
    }
  }

  template <KvCacheType T>
  static void scores(const KvHeadView& kv, int n_pos, int64_t b0, int64_t b1, const float* q,
                     int n_q, float* s) {
    const int64_t stride = attention_scratch_floats(1, n_pos);
    head_groups(n_q, [&]<int H>(int h0) {
      P::template score_range<T, H>(kv, b0, b1, q + static_cast<int64_t>(h0) * kv.head_dim,
                                    s + h0 * stride, stride);
    });
  }

  template <KvCacheType T>
  static void values(const KvHeadView& kv, int n_pos, int d0, int d1, const float* s, int n_q,
                     float* out, float* weights) {
    const int64_t stride = attention_scratch_floats(1, n_pos);
    head_groups(n_q, [&]<int H>(int h0) {
      P::template value_range<T, H>(kv, n_pos, d0, d1, s + h0 * stride, weights + h0 * stride,
                                    stride, out + static_cast<int64_t>(h0) * kv.head_dim);
    });
  }

  static void any_scores(const KvHeadView& kv, int n_pos, int64_t b0, int64_t b1, const float* q,
                         int n_q, float* s) {
    switch (kv.type) {
      case KvCacheType::f32:
        return scores<KvCacheType::f32>(kv, n_pos, b0, b1, q, n_q, s);
      case KvCacheType::f16:
        return scores<KvCacheType::f16>(kv, n_pos, b0, b1, q, n_q, s);
      case KvCacheType::q8:
        return scores<KvCacheType::q8>(kv, n_pos, b0, b1, q, n_q, s);
    }
  }

  static void any_values(const KvHeadView& kv, int n_pos, int d0, int d1, const float* s, int n_q,
                         float* out, float* weights) {
    switch (kv.type) {
      case KvCacheType::f32:
        return values<KvCacheType::f32>(kv, n_pos, d0, d1, s, n_q, out, weights);
      case KvCacheType::f16:
        return values<KvCacheType::f16>(kv, n_pos, d0, d1, s, n_q, out, weights);
      case KvCacheType::q8:
        return values<KvCacheType::q8>(kv, n_pos, d0, d1, s, n_q, out, weights);
    }
  }

  static constexpr AttentionKernel kernel = {any_scores, any_values};
};

}  // namespace bitnet
