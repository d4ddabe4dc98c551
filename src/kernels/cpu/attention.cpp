#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "base/float16.h"
#include "kernels/cpu/canonical_math.h"

namespace bitnet {

float quantize_query_q8(const float* q, int head_dim, int32_t* pairs) {
  float max_abs = 0.0f;
  for (int i = 0; i < head_dim; ++i) max_abs = std::max(max_abs, std::fabs(q[i]));
  const float inv = max_abs > 0.0f ? kQ8Max / max_abs : 0.0f;
  auto round16 = [&](float x) {
    const float r = clamp_code(round_half_even(x * inv), -static_cast<float>(kQ8Max),
                               static_cast<float>(kQ8Max));
    return static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(r)));
  };
  for (int i = 0; i < head_dim / 2; ++i)
    pairs[i] = static_cast<int32_t>(round16(q[2 * i]) | round16(q[2 * i + 1]) << 16);
  return max_abs / kQ8Max;
}

namespace {

float element(KvCacheType type, const void* base, int64_t i) {
  switch (type) {
    case KvCacheType::f32:
      return static_cast<const float*>(base)[i];
    case KvCacheType::f16:
      return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case KvCacheType::q8:
      return static_cast<const int8_t*>(base)[i];
  }
  return 0.0f;
}

void scalar_scores(const KvHeadView& kv, int n_pos, int64_t b0, int64_t b1, const float* q, int n_q,
                   float* s) {
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos);
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t p0 = b0 * kKeyBlock, p1 = std::min<int64_t>(b1 * kKeyBlock, n_pos);
  const bool q8 = kv.type == KvCacheType::q8;
  int32_t pairs[kQ8MaxHeadDim / 2];
  for (int h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * hd;
    const float c = q8 ? quantize_query_q8(qh, hd, pairs) * inv_sqrt : inv_sqrt;
    for (int64_t p = p0; p < p1; ++p) {
      float score;
      if (q8) {
        int32_t dot = 0;
        for (int i = 0; i < hd; ++i) {
          const int16_t q16 = static_cast<int16_t>(pairs[i / 2] >> (16 * (i % 2)));
          dot +=
              q16 * static_cast<int32_t>(element(kv.type, kv.keys, key_index(kv.type, hd, p, i)));
        }
        score = (static_cast<float>(dot) * kv.key_scales[p]) * c;
      } else {
        float acc = 0.0f;
        for (int i = 0; i < hd; ++i)
          acc = std::fma(qh[i], element(kv.type, kv.keys, key_index(kv.type, hd, p, i)), acc);
        score = acc * c;
      }
      s[h * stride + p] = score;
    }
  }
}

void scalar_values(const KvHeadView& kv, int n_pos, int d0, int d1, const float* s, int n_q,
                   float* out, float* weights) {
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos);
  const bool q8 = kv.type == KvCacheType::q8;
  for (int h = 0; h < n_q; ++h) {
    const float* sh = s + h * stride;
    float* e = weights + h * stride;
    float max_s = -INFINITY;
    for (int p = 0; p < n_pos; ++p) max_s = std::max(max_s, sh[p]);
    float lane[kLanes] = {};
    float max_w = 0.0f;
    for (int p = 0; p < n_pos; ++p) {
      e[p] = exp_nonpositive(sh[p] - max_s);
      lane[p % kLanes] += e[p];
      if (q8) {
        e[p] *= kv.value_scales[p];
        max_w = std::max(max_w, e[p]);
      }
    }
    float out_scale = 1.0f / reduce_lanes(lane);
    if (q8) {
      const float inv_w = max_w > 0.0f ? kQ8Max / max_w : 0.0f;
      // An int16 as float; a NaN (from non-finite values) as 0.
      for (int p = 0; p < n_pos; ++p)
        e[p] = clamp_code(round_half_even(e[p] * inv_w), 0.0f, static_cast<float>(kQ8Max));
      out_scale = (max_w / kQ8Max) * out_scale;
    }
    float* oh = out + static_cast<int64_t>(h) * hd;
    for (int d = d0; d < d1; ++d) {
      float acc = 0.0f;
      if (q8) {
        for (int p0 = 0; p0 < n_pos; p0 += kQ8ValueChunk) {
          int32_t dot = 0;
          for (int p = p0; p < std::min(n_pos, p0 + kQ8ValueChunk); ++p)
            dot +=
                static_cast<int32_t>(e[p]) *
                static_cast<int32_t>(element(kv.type, kv.values, value_index(kv.type, hd, p, d)));
          acc += static_cast<float>(dot);
        }
      } else {
        for (int p = 0; p < n_pos; ++p)
          acc = std::fma(e[p], element(kv.type, kv.values, value_index(kv.type, hd, p, d)), acc);
      }
      oh[d] = acc * out_scale;
    }
  }
}

}  // namespace

void attention_scalar(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                      float* scratch) {
  AttentionKernel{scalar_scores, scalar_values}(kv, n_pos, q, n_q, out, scratch);
}

// Defined in attention_avx2.cpp / attention_avx512.cpp.
extern const AttentionKernel kAttentionAvx2, kAttentionAvx512, kAttentionAvx512Zen4;

AttentionKernel attention_kernel(CpuIsa isa, int head_dim, bool amd_zen4) {
  if (head_dim % kLanes == 0) {
    switch (isa) {
      case CpuIsa::avx512_vnni:
        return amd_zen4 ? kAttentionAvx512Zen4 : kAttentionAvx512;
      case CpuIsa::avx2:
        return kAttentionAvx2;
      case CpuIsa::scalar:
        break;
    }
  }
  return {scalar_scores, scalar_values};
}

}  // namespace bitnet
