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
    return static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(std::clamp(
        std::nearbyint(x * inv), -static_cast<float>(kQ8Max), static_cast<float>(kQ8Max)))));
  };
  for (int i = 0; i < head_dim / 2; ++i)
    pairs[i] = static_cast<int32_t>(round16(q[2 * i]) | round16(q[2 * i + 1]) << 16);
  return max_abs / kQ8Max;
}

namespace {

void attention_scalar_q8(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                         float* scratch) {
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos);
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto* keys = static_cast<const int8_t*>(kv.keys);
  const auto* values = static_cast<const int8_t*>(kv.values);
  int32_t pairs[kQ8MaxHeadDim / 2];
  for (int h = 0; h < n_q; ++h) {
    const float c = quantize_query_q8(q + static_cast<int64_t>(h) * hd, hd, pairs) * inv_sqrt;
    float* e = scratch + h * stride;
    float max_s = -INFINITY;
    for (int p = 0; p < n_pos; ++p) {
      int32_t dot = 0;
      for (int i = 0; i < hd; ++i) {
        const int16_t q16 = static_cast<int16_t>(pairs[i / 2] >> (16 * (i % 2)));
        dot += q16 * keys[key_index(kv.type, hd, p, i)];
      }
      e[p] = (static_cast<float>(dot) * kv.key_scales[p]) * c;
      max_s = std::max(max_s, e[p]);
    }
    float lane[kLanes] = {};
    float max_w = 0.0f;
    for (int p = 0; p < n_pos; ++p) {
      e[p] = exp_nonpositive(e[p] - max_s);
      lane[p % kLanes] += e[p];
      e[p] *= kv.value_scales[p];
      max_w = std::max(max_w, e[p]);
    }
    const float inv_w = max_w > 0.0f ? kQ8Max / max_w : 0.0f;
    for (int p = 0; p < n_pos; ++p)
      e[p] = std::nearbyint(e[p] * inv_w);  // an int16 held in a float
    const float out_scale = (max_w / kQ8Max) * (1.0f / reduce_lanes(lane));
    float* oh = out + static_cast<int64_t>(h) * hd;
    for (int d = 0; d < hd; ++d) {
      float acc = 0.0f;
      for (int p0 = 0; p0 < n_pos; p0 += kQ8ValueChunk) {
        int32_t dot = 0;
        for (int p = p0; p < std::min(n_pos, p0 + kQ8ValueChunk); ++p)
          dot += static_cast<int32_t>(e[p]) * values[value_index(kv.type, hd, p, d)];
        acc += static_cast<float>(dot);
      }
      oh[d] = acc * out_scale;
    }
  }
}

float element(KvCacheType type, const void* base, int64_t i) {
  return type == KvCacheType::f32 ? static_cast<const float*>(base)[i]
                                  : f16_to_f32(static_cast<const uint16_t*>(base)[i]);
}

}  // namespace

void attention_scalar(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                      float* scratch) {
  if (kv.type == KvCacheType::q8) return attention_scalar_q8(kv, n_pos, q, n_q, out, scratch);
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos);
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * hd;
    float* e = scratch + h * stride;
    float max_s = -INFINITY;
    for (int p = 0; p < n_pos; ++p) {
      float acc = 0.0f;
      for (int i = 0; i < hd; ++i)
        acc = std::fma(qh[i], element(kv.type, kv.keys, key_index(kv.type, hd, p, i)), acc);
      e[p] = acc * inv_sqrt;
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
      for (int p = 0; p < n_pos; ++p)
        acc = std::fma(e[p], element(kv.type, kv.values, value_index(kv.type, hd, p, d)), acc);
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
