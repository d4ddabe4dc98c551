// AVX-512 attention (see attention.h): scores for two key blocks x up to four query heads at a
// time (eight independent fma chains, each key load shared by the heads), then values for up to
// four heads x 64 dimensions, so each K and V byte is read once per group of query heads. q8
// caches run the same loops with vpdpwssd on int16 pairs.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention_simd.h"
#include "kernels/cpu/simd_avx512.h"

namespace bitnet {
namespace {

// Keys and values stream from DRAM (the cache is mapped in 4 KiB pages, see KvCache): prefetching
// this far ahead keeps enough misses in flight to approach the read bandwidth. Into L1, or into L2
// on AMD Zen 4 (kToL2, CpuFeatures::amd_zen4), where L1 prefetches held attention far below the
// memory: one layer at 4096 positions (attention/<type>/ctx:4096), f16 11.1-11.7 -> 17.0-18.4 GB/s
// on 1 thread and 17.5-18.0 -> 20.3-30.9 on 2, q8 10.0-10.4 -> 17.6-18.8 and 16.0-16.1 ->
// 26.0-29.0. (Into L2 at 4 KB: no gain; at 16-32 KB: as at 8 KB.)
constexpr int64_t kPrefetchBytes = 8192;

template <bool kToL2>
void prefetch(const void* at) {
  const char* p = static_cast<const char*>(at) + kPrefetchBytes;
  if constexpr (kToL2) {
    _mm_prefetch(p, _MM_HINT_T1);
  } else {
    _mm_prefetch(p, _MM_HINT_T0);
  }
}

template <KvCacheType T>
constexpr int64_t kElementBytes = T == KvCacheType::f32   ? 4
                                  : T == KvCacheType::f16 ? 2
                                                          : 1;

template <KvCacheType T, bool kToL2>
void prefetch_ahead(const void* base, int64_t i) {
  prefetch<kToL2>(static_cast<const char*>(base) + i * kElementBytes<T>);
}

// 16 consecutive elements starting at element index i, widened to fp32 (exactly).
template <KvCacheType T>
__m512 load16(const void* base, int64_t i) {
  if constexpr (T == KvCacheType::f32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    static_assert(T == KvCacheType::f16);
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  }
}

// 16 int8 pairs at p, widened to 16 int16 pairs (one per 32-bit lane).
__m512i load_pairs(const int8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Scores of H heads for key blocks [b, b + NB), written to s[h * stride + position].
template <KvCacheType T, int H, int NB, bool kToL2>
void score_blocks(const KvHeadView& kv, int64_t b, const float* q, float* s, int64_t stride,
                  float inv_sqrt) {
  const int hd = kv.head_dim;
  __m512 acc[NB][H];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[j][h] = _mm512_setzero_ps();
  for (int i = 0; i < hd; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      prefetch_ahead<T, kToL2>(kv.keys, ((b + j) * hd + i) * kKeyBlock);
      const __m512 k = load16<T>(kv.keys, ((b + j) * hd + i) * kKeyBlock);
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h)
        acc[j][h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * hd + i]), k, acc[j][h]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      _mm512_storeu_ps(s + h * stride + (b + j) * kKeyBlock,
                       _mm512_mul_ps(acc[j][h], _mm512_set1_ps(inv_sqrt)));
}

// q8 scores of H heads (query pairs[h], scale factors c[h]) for key blocks [b, b + NB).
template <int H, int NB, bool kToL2>
void score_blocks_q8(const KvHeadView& kv, int64_t b, const int32_t (*pairs)[kQ8MaxHeadDim / 2],
                     const float* c, float* s, int64_t stride) {
  const int hd = kv.head_dim;
  const auto* keys = static_cast<const int8_t*>(kv.keys);
  __m512i acc[NB][H];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[j][h] = _mm512_setzero_si512();
  for (int i = 0; i < hd / 2; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      const int8_t* at = keys + (b + j) * hd * kKeyBlock + i * 2 * kKeyBlock;
      if (i % 2 == 0) prefetch<kToL2>(at);
      const __m512i k = load_pairs(at);
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h)
        acc[j][h] = _mm512_dpwssd_epi32(acc[j][h], k, _mm512_set1_epi32(pairs[h][i]));
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j) {
    const __m512 scale = _mm512_loadu_ps(kv.key_scales + (b + j) * kKeyBlock);
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      _mm512_storeu_ps(
          s + h * stride + (b + j) * kKeyBlock,
          _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[j][h]), scale), _mm512_set1_ps(c[h])));
  }
}

// Out of H heads for dimensions [d0, d0 + 16 DV) from weights e.
template <KvCacheType T, int H, int DV, bool kToL2>
void value_chunk(const KvHeadView& kv, int n_pos, const float* e, int64_t stride, int d0,
                 const float* inv_sum, float* out) {
  const int hd = kv.head_dim;
  __m512 acc[H][DV];
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int j = 0; j < DV; ++j) acc[h][j] = _mm512_setzero_ps();
  for (int p = 0; p < n_pos; ++p) {
    __m512 v[DV];
#pragma GCC unroll 16
    for (int j = 0; j < DV; ++j) {
      if ((16 * j * kElementBytes<T>) % 64 == 0)  // once per cache line
        prefetch_ahead<T, kToL2>(kv.values, static_cast<int64_t>(p) * hd + d0 + 16 * j);
      v[j] = load16<T>(kv.values, static_cast<int64_t>(p) * hd + d0 + 16 * j);
    }
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) {
      const __m512 w = _mm512_set1_ps(e[h * stride + p]);
#pragma GCC unroll 16
      for (int j = 0; j < DV; ++j) acc[h][j] = _mm512_fmadd_ps(w, v[j], acc[h][j]);
    }
  }
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int j = 0; j < DV; ++j)
      _mm512_storeu_ps(out + h * hd + d0 + 16 * j,
                       _mm512_mul_ps(acc[h][j], _mm512_set1_ps(inv_sum[h])));
}

// q8 out of H heads for dimensions [d0, d0 + 16 DV) from the int16 weights packed at the start of
// each head's scores (quantize_weights), int32 sums flushed to fp32 every kQ8ValueChunk positions.
template <int H, int DV, bool kToL2>
void value_chunk_q8(const KvHeadView& kv, int n_pos, const float* s, int64_t stride, int d0,
                    const float* out_scale, float* out) {
  const int hd = kv.head_dim;
  const auto* values = static_cast<const int8_t*>(kv.values);
  const int64_t n_pairs = (n_pos + 1) / 2;
  for (int64_t first = 0; first < n_pairs; first += kQ8ValueChunk / 2) {
    __m512i acc[H][DV];
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
      for (int j = 0; j < DV; ++j) acc[h][j] = _mm512_setzero_si512();
    for (int64_t pair = first; pair < std::min(n_pairs, first + kQ8ValueChunk / 2); ++pair) {
      const int8_t* row = values + pair * 2 * hd + 2 * d0;
      __m512i v[DV];
#pragma GCC unroll 16
      for (int j = 0; j < DV; ++j) {
        if (j % 2 == 0)  // once per cache line
          prefetch<kToL2>(row + 32 * j);
        v[j] = load_pairs(row + 32 * j);
      }
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) {
        const __m512i w = _mm512_broadcastd_epi32(_mm_loadu_si32(s + h * stride + pair));
#pragma GCC unroll 16
        for (int j = 0; j < DV; ++j) acc[h][j] = _mm512_dpwssd_epi32(acc[h][j], v[j], w);
      }
    }
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
      for (int j = 0; j < DV; ++j) {
        float* o = out + h * hd + d0 + 16 * j;
        const __m512 sum = _mm512_cvtepi32_ps(acc[h][j]);
        _mm512_storeu_ps(o, first == 0 ? sum : _mm512_add_ps(_mm512_loadu_ps(o), sum));
      }
  }
#pragma GCC unroll 16
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int j = 0; j < DV; ++j) {
      float* o = out + h * hd + d0 + 16 * j;
      _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), _mm512_set1_ps(out_scale[h])));
    }
}

// Rounds the weights e[p] * value_scale[p] of positions [0, padded n) to int16 and packs them
// over the first half of e (pair p / 2 in float slot p / 2); returns their scale.
float quantize_weights(float* e, const float* value_scales, int64_t padded) {
  __m512 m = _mm512_setzero_ps();
  for (int64_t p = 0; p < padded; p += kLanes) {
    const __m512 w = _mm512_mul_ps(_mm512_loadu_ps(e + p), _mm512_loadu_ps(value_scales + p));
    _mm512_storeu_ps(e + p, w);
    m = _mm512_max_ps(m, w);
  }
  const float max_w = _mm512_reduce_max_ps(m);
  const __m512 inv = _mm512_set1_ps(max_w > 0.0f ? kQ8Max / max_w : 0.0f);
  // Packing in place: block p / 16 reads floats [p, p + 16) and writes before p / 2 + 8 <= p + 16.
  for (int64_t p = 0; p < padded; p += kLanes) {
    const __m512i w16 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(e + p), inv));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + p / 2), _mm512_cvtepi32_epi16(w16));
  }
  return max_w / kQ8Max;
}

// Writes e[0, n) = exp(s - max s) (zero up to the block end; e may be s) and returns 1 / sum e.
float softmax_weights(const float* s, float* e, int n_pos) {
  const int64_t full = n_pos / kLanes * kLanes;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n_pos - full)) - 1);
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (int64_t p = 0; p < full; p += kLanes) m = _mm512_max_ps(m, _mm512_loadu_ps(s + p));
  if (tail) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, tail, s + full));
  const __m512 max_s = _mm512_set1_ps(_mm512_reduce_max_ps(m));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t p = 0; p < full; p += kLanes) {
    const __m512 w = avx512::exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + p), max_s));
    _mm512_storeu_ps(e + p, w);
    sum = _mm512_add_ps(sum, w);
  }
  if (tail) {
    const __m512 w = _mm512_maskz_mov_ps(
        tail, avx512::exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + full), max_s)));
    _mm512_storeu_ps(e + full, w);
    sum = _mm512_add_ps(sum, w);
  }
  return 1.0f / avx512::reduce_lanes(sum);
}

// The passes SimdAttention runs for each group of heads.
template <bool kToL2>
struct Passes {
  // Scores of H heads for key blocks [b0, b1).
  template <KvCacheType T, int H>
  static void score_range(const KvHeadView& kv, int64_t b0, int64_t b1, const float* q, float* s,
                          int64_t stride) {
    const int hd = kv.head_dim;
    const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
    int64_t b = b0;
    if constexpr (T == KvCacheType::q8) {
      int32_t pairs[H][kQ8MaxHeadDim / 2];
      float c[H];
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) c[h] = quantize_query_q8(q + h * hd, hd, pairs[h]) * inv_sqrt;
      for (; b + 2 <= b1; b += 2) score_blocks_q8<H, 2, kToL2>(kv, b, pairs, c, s, stride);
      if (b < b1) score_blocks_q8<H, 1, kToL2>(kv, b, pairs, c, s, stride);
    } else {
      for (; b + 2 <= b1; b += 2) score_blocks<T, H, 2, kToL2>(kv, b, q, s, stride, inv_sqrt);
      if (b < b1) score_blocks<T, H, 1, kToL2>(kv, b, q, s, stride, inv_sqrt);
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
    for (int d = d0; d < d1;) {
      if (d1 - d >= 64) {
        if constexpr (T == KvCacheType::q8)
          value_chunk_q8<H, 4, kToL2>(kv, n_pos, e, stride, d, scale, out);
        else
          value_chunk<T, H, 4, kToL2>(kv, n_pos, e, stride, d, scale, out);
        d += 64;
      } else {
        if constexpr (T == KvCacheType::q8)
          value_chunk_q8<H, 1, kToL2>(kv, n_pos, e, stride, d, scale, out);
        else
          value_chunk<T, H, 1, kToL2>(kv, n_pos, e, stride, d, scale, out);
        d += 16;
      }
    }
  }
};

}  // namespace

extern const AttentionKernel kAttentionAvx512 = SimdAttention<Passes<false>>::kernel;
extern const AttentionKernel kAttentionAvx512Zen4 = SimdAttention<Passes<true>>::kernel;

}  // namespace bitnet
