// AVX2 attention (see attention.h): a key block is a pair of ymm (positions 0-7, 8-15); scores
// for one block x up to four query heads, then values for up to four heads x 16 dimensions.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/simd_avx2.h"

namespace bitnet {
namespace {

constexpr int kMaxHeads = 4;
// As in attention_avx512.cpp: keys and values stream from DRAM; prefetch this far ahead.
constexpr int64_t kPrefetchBytes = 8192;

template <KvCacheType T>
void prefetch_ahead(const void* base, int64_t i) {
  constexpr int64_t element_bytes =
      T == KvCacheType::f32 ? 4 : T == KvCacheType::f16 ? 2 : 1;
  _mm_prefetch(static_cast<const char*>(base) + i * element_bytes + kPrefetchBytes, _MM_HINT_T0);
}

// 8 consecutive elements starting at element index i, widened to fp32 (exactly).
template <KvCacheType T>
__m256 load8(const void* base, int64_t i) {
  if constexpr (T == KvCacheType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (T == KvCacheType::f16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + i))));
  }
}

template <KvCacheType T, int H>
void score_block(const KvHeadView& kv, int64_t b, const float* q, float* s, int64_t stride,
                 float inv_sqrt) {
  const int hd = kv.head_dim;
  __m256 acc[2][H];
#pragma GCC unroll 16
  for (int j = 0; j < 2; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[j][h] = _mm256_setzero_ps();
  for (int i = 0; i < hd; ++i) {
    const int64_t at = (b * hd + i) * kKeyBlock;
    prefetch_ahead<T>(kv.keys, at);
    const __m256 k[2] = {load8<T>(kv.keys, at), load8<T>(kv.keys, at + 8)};
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) {
      const __m256 qi = _mm256_set1_ps(q[h * hd + i]);
#pragma GCC unroll 16
      for (int j = 0; j < 2; ++j) acc[j][h] = _mm256_fmadd_ps(qi, k[j], acc[j][h]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < 2; ++j) {
    __m256 c = _mm256_set1_ps(inv_sqrt);
    if constexpr (T == KvCacheType::q8)
      c = _mm256_mul_ps(_mm256_loadu_ps(kv.key_scales + b * kKeyBlock + 8 * j), c);
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      _mm256_storeu_ps(s + h * stride + b * kKeyBlock + 8 * j, _mm256_mul_ps(acc[j][h], c));
  }
}

template <KvCacheType T, int H>
void value_chunk(const KvHeadView& kv, int n_pos, const float* e, int64_t stride, int d0,
                 const float* inv_sum, float* out) {
  const int hd = kv.head_dim;
  __m256 acc[H][2];
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
  for (int p = 0; p < n_pos; ++p) {
    const int64_t at = static_cast<int64_t>(p) * hd + d0;
    prefetch_ahead<T>(kv.values, at);
    const __m256 v[2] = {load8<T>(kv.values, at), load8<T>(kv.values, at + 8)};
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) {
      float weight = e[h * stride + p];
      if constexpr (T == KvCacheType::q8) weight *= kv.value_scales[p];
      const __m256 w = _mm256_set1_ps(weight);
#pragma GCC unroll 16
      for (int j = 0; j < 2; ++j) acc[h][j] = _mm256_fmadd_ps(w, v[j], acc[h][j]);
    }
  }
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int j = 0; j < 2; ++j)
      _mm256_storeu_ps(out + h * hd + d0 + 8 * j,
                       _mm256_mul_ps(acc[h][j], _mm256_set1_ps(inv_sum[h])));
}

// Replaces scores s[0, n) by exp(s - max) (zero up to the block end) and returns 1 / their sum.
float softmax_weights(float* s, int n_pos) {
  const int64_t blocks = (n_pos + kLanes - 1) / kLanes;
  float max_s = -INFINITY;
  for (int p = 0; p < n_pos; ++p) max_s = std::max(max_s, s[p]);
  const __m256 m = _mm256_set1_ps(max_s);
  __m256 sum[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 16
    for (int j = 0; j < 2; ++j) {
      float* at = s + b * kLanes + 8 * j;
      __m256 e = avx2::exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(at), m));
      const int64_t valid = n_pos - (b * kLanes + 8 * j);
      if (valid < 8) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i keep = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(static_cast<int>(std::max<int64_t>(valid, 0))), lane);
        e = _mm256_and_ps(e, _mm256_castsi256_ps(keep));
      }
      _mm256_storeu_ps(at, e);
      sum[j] = _mm256_add_ps(sum[j], e);
    }
  }
  return 1.0f / avx2::reduce_lanes(sum[0], sum[1]);
}

template <KvCacheType T, int H>
void heads(const KvHeadView& kv, int n_pos, const float* q, float* out, float* s) {
  const int hd = kv.head_dim;
  const int64_t stride = attention_scratch_floats(1, n_pos), blocks = stride / kKeyBlock;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t b = 0; b < blocks; ++b) score_block<T, H>(kv, b, q, s, stride, inv_sqrt);
  float inv_sum[H];
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h) inv_sum[h] = softmax_weights(s + h * stride, n_pos);
  for (int d0 = 0; d0 < hd; d0 += 16) value_chunk<T, H>(kv, n_pos, s, stride, d0, inv_sum, out);
}

template <KvCacheType T>
void attention_type(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                    float* scratch) {
  const int hd = kv.head_dim;
  for (int h0 = 0; h0 < n_q; h0 += kMaxHeads) {
    const float* qh = q + static_cast<int64_t>(h0) * hd;
    float* oh = out + static_cast<int64_t>(h0) * hd;
    switch (std::min(kMaxHeads, n_q - h0)) {
      case 1:
        heads<T, 1>(kv, n_pos, qh, oh, scratch);
        break;
      case 2:
        heads<T, 2>(kv, n_pos, qh, oh, scratch);
        break;
      case 3:
        heads<T, 3>(kv, n_pos, qh, oh, scratch);
        break;
      default:
        heads<T, 4>(kv, n_pos, qh, oh, scratch);
        break;
    }
  }
}

}  // namespace

void attention_avx2(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                    float* scratch) {
  switch (kv.type) {
    case KvCacheType::f32:
      return attention_type<KvCacheType::f32>(kv, n_pos, q, n_q, out, scratch);
    case KvCacheType::f16:
      return attention_type<KvCacheType::f16>(kv, n_pos, q, n_q, out, scratch);
    case KvCacheType::q8:
      return attention_type<KvCacheType::q8>(kv, n_pos, q, n_q, out, scratch);
  }
}

}  // namespace bitnet
