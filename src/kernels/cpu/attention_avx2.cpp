// AVX2 attention (see attention.h): a key block is a pair of ymm (positions 0-7, 8-15); scores
// for one block x up to four query heads, then values for up to four heads x 16 dimensions. q8
// caches run the same loops with vpmaddwd on int16 pairs.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention_simd.h"
#include "kernels/cpu/simd_avx2.h"

namespace bitnet {
namespace {

// As in attention_avx512.cpp: keys and values stream from DRAM; prefetch this far ahead.
constexpr int64_t kPrefetchBytes = 8192;

template <KvCacheType T>
void prefetch_ahead(const void* base, int64_t i) {
  constexpr int64_t element_bytes = T == KvCacheType::f32 ? 4 : T == KvCacheType::f16 ? 2 : 1;
  _mm_prefetch(static_cast<const char*>(base) + i * element_bytes + kPrefetchBytes, _MM_HINT_T0);
}

// 8 consecutive elements starting at element index i, widened to fp32 (exactly).
template <KvCacheType T>
__m256 load8(const void* base, int64_t i) {
  if constexpr (T == KvCacheType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    static_assert(T == KvCacheType::f16);
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  }
}

// 8 int8 pairs at p, widened to 8 int16 pairs (one per 32-bit lane).
__m256i load_pairs(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Exact int32 lanes += the products of int16 pairs (|a|, |b| < 2^15 with no -2^15 pair: no
// saturation).
__m256i dot_pairs(__m256i acc, __m256i a, __m256i b) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
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
  for (int j = 0; j < 2; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      _mm256_storeu_ps(s + h * stride + b * kKeyBlock + 8 * j,
                       _mm256_mul_ps(acc[j][h], _mm256_set1_ps(inv_sqrt)));
}

// q8 scores of H heads (query pairs[h], scale factors c[h]) for key block b.
template <int H>
void score_block_q8(const KvHeadView& kv, int64_t b, const int32_t (*pairs)[kQ8MaxHeadDim / 2],
                    const float* c, float* s, int64_t stride) {
  const int hd = kv.head_dim;
  const auto* keys = static_cast<const int8_t*>(kv.keys);
  __m256i acc[2][H];
#pragma GCC unroll 16
  for (int j = 0; j < 2; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[j][h] = _mm256_setzero_si256();
  for (int i = 0; i < hd / 2; ++i) {
    const int8_t* at = keys + b * hd * kKeyBlock + i * 2 * kKeyBlock;
    if (i % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(at) + kPrefetchBytes, _MM_HINT_T0);
    const __m256i k[2] = {load_pairs(at), load_pairs(at + 16)};
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) {
      const __m256i qi = _mm256_set1_epi32(pairs[h][i]);
#pragma GCC unroll 16
      for (int j = 0; j < 2; ++j) acc[j][h] = dot_pairs(acc[j][h], k[j], qi);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < 2; ++j) {
    const __m256 scale = _mm256_loadu_ps(kv.key_scales + b * kKeyBlock + 8 * j);
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      _mm256_storeu_ps(
          s + h * stride + b * kKeyBlock + 8 * j,
          _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[j][h]), scale), _mm256_set1_ps(c[h])));
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
      const __m256 w = _mm256_set1_ps(e[h * stride + p]);
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

// q8 out of H heads for dimensions [d0, d0 + 16) from the int16 weights packed at the start of
// each head's scores (quantize_weights), int32 sums flushed to fp32 every kQ8ValueChunk positions.
template <int H>
void value_chunk_q8(const KvHeadView& kv, int n_pos, const float* s, int64_t stride, int d0,
                    const float* out_scale, float* out) {
  const int hd = kv.head_dim;
  const auto* values = static_cast<const int8_t*>(kv.values);
  const int64_t n_pairs = (n_pos + 1) / 2;
  for (int64_t first = 0; first < n_pairs; first += kQ8ValueChunk / 2) {
    __m256i acc[H][2];
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_si256();
    for (int64_t pair = first; pair < std::min(n_pairs, first + kQ8ValueChunk / 2); ++pair) {
      const int8_t* row = values + pair * 2 * hd + 2 * d0;
      _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
      const __m256i v[2] = {load_pairs(row), load_pairs(row + 16)};
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) {
        const __m256i w =
            _mm256_set1_epi32(_mm_cvtsi128_si32(_mm_loadu_si32(s + h * stride + pair)));
#pragma GCC unroll 16
        for (int j = 0; j < 2; ++j) acc[h][j] = dot_pairs(acc[h][j], v[j], w);
      }
    }
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
      for (int j = 0; j < 2; ++j) {
        float* o = out + h * hd + d0 + 8 * j;
        const __m256 sum = _mm256_cvtepi32_ps(acc[h][j]);
        _mm256_storeu_ps(o, first == 0 ? sum : _mm256_add_ps(_mm256_loadu_ps(o), sum));
      }
  }
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int j = 0; j < 2; ++j) {
      float* o = out + h * hd + d0 + 8 * j;
      _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_loadu_ps(o), _mm256_set1_ps(out_scale[h])));
    }
}

// Rounds the weights e[p] * value_scale[p] of positions [0, padded n) to int16 and packs them
// over the first half of e (pair p / 2 in float slot p / 2); returns their scale.
float quantize_weights(float* e, const float* value_scales, int64_t padded) {
  __m256 m = _mm256_setzero_ps();
  for (int64_t p = 0; p < padded; p += 8) {
    const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(e + p), _mm256_loadu_ps(value_scales + p));
    _mm256_storeu_ps(e + p, w);
    m = _mm256_max_ps(m, w);
  }
  const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float max_w = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
  const __m256 inv = _mm256_set1_ps(max_w > 0.0f ? kQ8Max / max_w : 0.0f);
  // Packing in place: block p / 8 reads floats [p, p + 8) and writes before p / 2 + 4 <= p + 8.
  for (int64_t p = 0; p < padded; p += 8) {
    const __m256i w32 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(e + p), inv));
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(e + p / 2),
        _mm_packs_epi32(_mm256_castsi256_si128(w32), _mm256_extracti128_si256(w32, 1)));
  }
  return max_w / kQ8Max;
}

// Writes e[0, n) = exp(s - max s) (zero up to the block end; e may be s) and returns 1 / sum e.
float softmax_weights(const float* s, float* e, int n_pos) {
  const int64_t blocks = (n_pos + kLanes - 1) / kLanes;
  float max_s = -INFINITY;
  for (int p = 0; p < n_pos; ++p) max_s = std::max(max_s, s[p]);
  const __m256 m = _mm256_set1_ps(max_s);
  __m256 sum[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 16
    for (int j = 0; j < 2; ++j) {
      const int64_t at = b * kLanes + 8 * j;
      __m256 w = avx2::exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + at), m));
      const int64_t valid = n_pos - at;
      if (valid < 8) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i keep = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(static_cast<int>(std::max<int64_t>(valid, 0))), lane);
        w = _mm256_and_ps(w, _mm256_castsi256_ps(keep));
      }
      _mm256_storeu_ps(e + at, w);
      sum[j] = _mm256_add_ps(sum[j], w);
    }
  }
  return 1.0f / avx2::reduce_lanes(sum[0], sum[1]);
}

// The passes SimdAttention runs for each group of heads.
struct Passes {
  // Scores of H heads for key blocks [b0, b1).
  template <KvCacheType T, int H>
  static void score_range(const KvHeadView& kv, int64_t b0, int64_t b1, const float* q, float* s,
                          int64_t stride) {
    const int hd = kv.head_dim;
    const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
    if constexpr (T == KvCacheType::q8) {
      int32_t pairs[H][kQ8MaxHeadDim / 2];
      float c[H];
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) c[h] = quantize_query_q8(q + h * hd, hd, pairs[h]) * inv_sqrt;
      for (int64_t b = b0; b < b1; ++b) score_block_q8<H>(kv, b, pairs, c, s, stride);
    } else {
      for (int64_t b = b0; b < b1; ++b) score_block<T, H>(kv, b, q, s, stride, inv_sqrt);
    }
  }

  // Out of H heads for dimensions [d0, d1) from their scores s, through weights e.
  template <KvCacheType T, int H>
  static void value_range(const KvHeadView& kv, int n_pos, int d0, int d1, const float* s, float* e,
                          int64_t stride, float* out) {
    float scale[H];
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) {
      scale[h] = softmax_weights(s + h * stride, e + h * stride, n_pos);
      if constexpr (T == KvCacheType::q8)
        scale[h] = quantize_weights(e + h * stride, kv.value_scales, stride) * scale[h];
    }
    for (int d = d0; d < d1; d += 16) {
      if constexpr (T == KvCacheType::q8)
        value_chunk_q8<H>(kv, n_pos, e, stride, d, scale, out);
      else
        value_chunk<T, H>(kv, n_pos, e, stride, d, scale, out);
    }
  }
};

}  // namespace

extern const AttentionKernel kAttentionAvx2 = SimdAttention<Passes>::kernel;

}  // namespace bitnet
