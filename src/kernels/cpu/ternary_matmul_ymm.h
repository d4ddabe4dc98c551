#pragma once
// 256-bit ternary matmul, shared by ternary_matmul_avx2.cpp (vpmaddubsw + vpmaddwd) and
// ternary_matmul_avxvnni.cpp (VEX vpdpbusd), which pass their dot product as `Dot`. Everything
// is in an anonymous namespace: each includer compiles it with its own target flags, and the
// linker must never merge the two.
//
// A row group's 64-byte vector (ternary_packing.h) is handled as two 32-byte halves of 8 rows
// each, one row per 32-bit lane, multiplied against 4 activations of a token broadcast to every
// lane, so no horizontal reduction is needed. Up to 7 tokens, a group is processed one half at a
// time (the second pass reads the group from L1/L2), NT tokens at once, decoding codes once for
// NT tokens; 5-7 tokens (5-8 with AVX-VNNI) decode each half vector once for all of them. From
// 8 tokens (9 with AVX-VNNI; prefill, large batches) a group is decoded once into a per-thread
// tile and every token multiplies it from there.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

// A decoder turns a 32-byte half vector into kPlanes vectors of codes, plane by plane:
// plane(state, i) for i = 0, 1, ... in turn, state starting as the half vector's bytes.
struct I2HalfDecoder {
  static constexpr int kPlanes = 4;
  static constexpr int64_t kBlock = kI2Block;
  static __m256i plane(__m256i& bytes, int i) {
    return _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * i), _mm256_set1_epi8(3));
  }
};

// t5 digit i of byte p is (3 * x_i) >> 8 with x_0 = p, x_{i+1} = (3 * x_i) mod 256, taken with
// byte averages (t5_digit_by_averages in ternary_layout_t5.h), which leave the multiply ports to
// the dot products: the AVX2 t5 GEMV (13824 x 2560, 1 thread, AMD Zen 4) 5.9-6.0 -> 6.7-7.0 GB/s
// against two vpmaddubsw per plane forming 3x.
struct T5HalfDecoder {
  static constexpr int kPlanes = kT5Planes;
  static constexpr int64_t kBlock = kT5Block;
  static __m256i plane(__m256i& x, int i) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i quarter_up = _mm256_avg_epu8(_mm256_avg_epu8(x, zero), zero);
    const __m256i three_quarters = _mm256_sub_epi8(x, quarter_up);  // at most 191
    const __m256i digit =
        _mm256_and_si256(_mm256_srli_epi16(three_quarters, 6), _mm256_set1_epi8(3));
    if (i + 1 < kPlanes) x = _mm256_add_epi8(_mm256_add_epi8(x, x), x);
    return digit;
  }
};

template <class D>
[[gnu::always_inline]] inline void decode(__m256i bytes, __m256i codes[D::kPlanes]) {
#pragma GCC unroll 16
  for (int i = 0; i < D::kPlanes; ++i) codes[i] = D::plane(bytes, i);
}

inline __m256i broadcast_dword(const int8_t* q) {
  int32_t four;
  std::memcpy(&four, q, 4);
  return _mm256_set1_epi32(four);
}

// See kPrefetchBytes in ternary_matmul_avx512.cpp.
constexpr int64_t kYmmPrefetchBytes = 8192;

// Policy for any decoder: codes of each plane times that plane's broadcast activations,
// alternating between two accumulators so consecutive dot products never wait on each other.
template <class D, class Dot>
struct CodesPolicy {
  static constexpr int64_t kBlock = D::kBlock;
  static constexpr int64_t kMaxCols = INT64_MAX;
  // q: token 0's activations for this vector (block start + 4m).
  template <int NT>
  static void accumulate(__m256i bytes, const int8_t* q, int64_t q_stride, __m256i acc[NT][2]) {
    __m256i codes[D::kPlanes];
    decode<D>(bytes, codes);
#pragma GCC unroll 16
    for (int i = 0; i < D::kPlanes; ++i) {
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n)
        acc[n][i % 2] =
            Dot::dot(acc[n][i % 2], codes[i], broadcast_dword(q + n * q_stride + 64 * i));
    }
  }
  static __m256i finish(__m256i a, __m256i b) {
    return _mm256_add_epi32(a, b);
  }
};

// t5 without decoding digits, for exact u8 x s8 dot products (VNNI): see T5Carry in
// ternary_matmul_avx512.cpp for the identity and its column limit.
template <class Dot>
struct T5CarryPolicy {
  static constexpr int64_t kBlock = kT5Block;
  static constexpr int64_t kMaxCols = (int64_t{1} << 31) / (256 * 2 * 128) - 1;
  template <int NT>
  static void accumulate(__m256i bytes, const int8_t* q, int64_t q_stride, __m256i acc[NT][2]) {
    __m256i x = bytes;
#pragma GCC unroll 16
    for (int i = 0; i < kT5Planes; ++i) {
      const __m256i next = _mm256_add_epi8(_mm256_add_epi8(x, x), x);
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        const __m256i qv = broadcast_dword(q + n * q_stride + 64 * i);
        acc[n][0] = Dot::dot(acc[n][0], x, qv);
        acc[n][1] = Dot::dot(acc[n][1], next, qv);
      }
      x = next;
    }
  }
  static __m256i finish(__m256i a, __m256i b) {
    return _mm256_srai_epi32(_mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(a, a), a), b), 8);
  }
};

// y[n][r] for the rows r = 16g + 8h + lane in [row_begin, row_end), from their sum(code * q).
inline void store_half_rows(__m256i code_dot, const TernaryMatrix& w, const QuantizedActs& acts,
                            int64_t n, int64_t g, int h, int64_t row_begin, int64_t row_end,
                            float* y, int64_t y_stride) {
  const int64_t r0 = g * kRowGroup + 8 * h;
  const int64_t lo = std::max<int64_t>(row_begin - r0, 0), hi = std::min<int64_t>(row_end - r0, 8);
  alignas(32) int32_t dot[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(dot), code_dot);
  for (int64_t lane = lo; lane < hi; ++lane) {
    y[n * y_stride + r0 + lane] =
        static_cast<float>(dot[lane] - acts.sum[n]) / acts.scale[n] * w.row_scales[r0 + lane];
  }
}

// Rows 16g + 8h .. 16g + 8h + 7 (those in [row_begin, row_end)) for tokens n0 .. n0 + NT. One
// or two tokens rotate the vectors over U accumulator sets, for 8 independent chains.
template <class P, int NT>
void half_group_times_tokens(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n0,
                             float* y, int64_t y_stride, int64_t g, int h, int64_t row_begin,
                             int64_t row_end) {
  const uint8_t* p = w.group(g) + 32 * h;
  const int8_t* q = acts.q.data() + n0 * acts.stride;
  constexpr int U = NT == 1 ? 4 : NT == 2 ? 2 : 1;
  __m256i acc[U][NT][2];
#pragma GCC unroll 16
  for (auto& set : acc)
#pragma GCC unroll 16
    for (auto& per_token : set) per_token[0] = per_token[1] = _mm256_setzero_si256();
  const int64_t blocks = w.blocks();
  for (int64_t b = 0; b < blocks; ++b, p += kRowGroup * 64) {
#pragma GCC unroll 16
    for (int m = 0; m < 16; ++m) {
      if (h == 0)
        _mm_prefetch(reinterpret_cast<const char*>(p + 64 * m + kYmmPrefetchBytes), _MM_HINT_T0);
      P::template accumulate<NT>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * m)),
                                 q + b * P::kBlock + 4 * m, acts.stride, acc[m % U]);
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NT; ++n) {
    __m256i a = acc[0][n][0], c = acc[0][n][1];
#pragma GCC unroll 16
    for (int u = 1; u < U; ++u) {
      a = _mm256_add_epi32(a, acc[u][n][0]);
      c = _mm256_add_epi32(c, acc[u][n][1]);
    }
    store_half_rows(P::finish(a, c), w, acts, n0 + n, g, h, row_begin, row_end, y, y_stride);
  }
}

// Rows 16g + 8h .. 16g + 8h + 7 for tokens 0 .. NT, NT = 5-8 (batched decode), one accumulator
// per token: each half vector is decoded one plane at a time, and each plane multiplied into
// every token at once, in registers (NT accumulators, the state, a plane and a broadcast fit the
// 16 ymm).
template <class D, class Dot, int NT>
void half_group_streamed(const TernaryMatrix& w, const QuantizedActs& acts, float* y,
                         int64_t y_stride, int64_t g, int h, int64_t row_begin, int64_t row_end) {
  const uint8_t* p = w.group(g) + 32 * h;
  const int8_t* q = acts.q.data();
  __m256i acc[NT];
#pragma GCC unroll 16
  for (auto& a : acc) a = _mm256_setzero_si256();
  const int64_t blocks = w.blocks();
  for (int64_t b = 0; b < blocks; ++b, p += kRowGroup * 64) {
    for (int m = 0; m < 16; ++m) {
      if (h == 0)
        _mm_prefetch(reinterpret_cast<const char*>(p + 64 * m + kYmmPrefetchBytes), _MM_HINT_T0);
      __m256i state = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * m));
#pragma GCC unroll 16
      for (int i = 0; i < D::kPlanes; ++i) {
        const __m256i codes = D::plane(state, i);
#pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) {
          acc[n] = Dot::dot(acc[n], codes,
                            broadcast_dword(q + n * acts.stride + b * D::kBlock + 64 * i + 4 * m));
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NT; ++n)
    store_half_rows(acc[n], w, acts, n, g, h, row_begin, row_end, y, y_stride);
}

// Every half group overlapping [row_begin, row_end): fn(g, h).
template <class Fn>
void for_each_half_group(int64_t row_begin, int64_t row_end, Fn&& fn) {
  for (int64_t g = row_begin / kRowGroup; g * kRowGroup < row_end; ++g) {
    for (int h = 0; h < 2; ++h) {
      if (g * kRowGroup + 8 * h < row_end && g * kRowGroup + 8 * h + 8 > row_begin) fn(g, h);
    }
  }
}

// Every group overlapping [row_begin, row_end), half by half, for NT tokens.
template <class P, int NT>
void groups_loop(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n0, float* y,
                 int64_t y_stride, int64_t row_begin, int64_t row_end) {
  for_each_half_group(row_begin, row_end, [&](int64_t g, int h) {
    half_group_times_tokens<P, NT>(w, acts, n0, y, y_stride, g, h, row_begin, row_end);
  });
}

// Calls fn.template operator()<NT>() with NT = count, for the 1-3 tokens left after groups of 4
// (nothing for 0).
template <class Fn>
void with_remaining_tokens(int64_t count, Fn&& fn) {
  if (count == 3) fn.template operator()<3>();
  if (count == 2) fn.template operator()<2>();
  if (count == 1) fn.template operator()<1>();
}

// From 5 tokens to Dot::kStreamMaxTokens, half_group_streamed; before, 5-7 tokens decoded each
// half vector again for each 4 tokens and 8 went through the tile. 13824 x 2560 on 1 thread:
// AVX-VNNI at 8 tokens (bitnet_bench ternary_gemm_batch8, medians of 3 alternating runs) t5
// 92 -> 119 GMAC/s, i2 104 -> 177. vpmaddubsw + vpmaddwd (AVX2) need two more registers: t5
// 45-47 -> 58-61 GMAC/s at 5-7 tokens (medians of 300 calls in turns), but 78 -> 66 at 8, where
// the tile stays.
constexpr int64_t kYmmStreamMinTokens = 5;

// Calls fn.template operator()<NT>() with NT = count, kYmmStreamMinTokens <= count <= kMax
// (only those NT are compiled).
template <int kMax, int NT = kYmmStreamMinTokens, class Fn>
void with_streamed_tokens(int64_t count, Fn&& fn) {
  if constexpr (NT <= kMax) {
    if (count == NT) return fn.template operator()<NT>();
    with_streamed_tokens<kMax, NT + 1>(count, fn);
  }
}

// From this many tokens each group is decoded once into a per-thread tile and multiplied from
// there into every token, kYmmTileTokens at a time: decoding a t5 vector costs more than
// multiplying it into 4 tokens, so decoding it again per 4 tokens bounded prefill. (AVX-VNNI, 1
// thread, 2560 x 2560, best of 40: 83 -> 101 GMAC/s at 12 tokens, 84 -> 108 at 16, even at 8.)
constexpr int64_t kYmmTileMinTokens = 8;
constexpr int kYmmTileTokens = 4;  // 2 x 4 accumulators + 2 codes + 1 broadcast (6: slower)

// Group g's codes for every step s = k / 4: tile[s][h] holds the 32-byte half h (rows 8h ..
// 8h + 7) of weights 4s .. 4s + 3.
template <class D>
void decode_group(const TernaryMatrix& w, int64_t g, uint8_t* tile) {
  const uint8_t* p = w.group(g);
  const int64_t blocks = w.blocks();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int m = 0; m < 16; ++m) {
      for (int h = 0; h < 2; ++h) {
        __m256i codes[D::kPlanes];
        decode<D>(_mm256_loadu_si256(
                      reinterpret_cast<const __m256i*>(p + (b * kRowGroup + m) * 64 + 32 * h)),
                  codes);
#pragma GCC unroll 16
        for (int i = 0; i < D::kPlanes; ++i) {
          const int64_t step = b * (D::kBlock / 4) + 16 * i + m;
          _mm256_store_si256(reinterpret_cast<__m256i*>(tile + step * 64 + 32 * h), codes[i]);
        }
      }
    }
  }
}

// Tokens n0 .. n0 + NT against a decoded group.
template <class Dot, int NT>
void tile_times_tokens(const uint8_t* tile, int64_t steps, const TernaryMatrix& w,
                       const QuantizedActs& acts, int64_t n0, int64_t g, int64_t row_begin,
                       int64_t row_end, float* y, int64_t y_stride) {
  __m256i acc[2][NT];
#pragma GCC unroll 16
  for (auto& per_half : acc)
#pragma GCC unroll 16
    for (auto& a : per_half) a = _mm256_setzero_si256();
  const int8_t* q = acts.q.data() + n0 * acts.stride;
  for (int64_t s = 0; s < steps; ++s) {
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + s * 64));
    const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + s * 64 + 32));
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      const __m256i qv = broadcast_dword(q + n * acts.stride + 4 * s);
      acc[0][n] = Dot::dot(acc[0][n], lo, qv);
      acc[1][n] = Dot::dot(acc[1][n], hi, qv);
    }
  }
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n)
      store_half_rows(acc[h][n], w, acts, n0 + n, g, h, row_begin, row_end, y, y_stride);
  }
}

template <class D, class Dot>
void matmul_tiled(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
                  int64_t y_stride, int64_t row_begin, int64_t row_end) {
  const int64_t steps = w.blocks() * D::kBlock / 4;
  uint8_t* tile = ternary_tile_buffer(steps * 64);
  for (int64_t g = row_begin / kRowGroup; g * kRowGroup < row_end; ++g) {
    decode_group<D>(w, g, tile);
    int64_t n = 0;
    for (; n + kYmmTileTokens <= n_tokens; n += kYmmTileTokens)
      tile_times_tokens<Dot, kYmmTileTokens>(tile, steps, w, acts, n, g, row_begin, row_end, y,
                                             y_stride);
    with_remaining_tokens(n_tokens - n, [&]<int NT>() {
      tile_times_tokens<Dot, NT>(tile, steps, w, acts, n, g, row_begin, row_end, y, y_stride);
    });
  }
}

// At most 8 accumulators of the 16 ymm registers: 1 token for decoding, 4 tokens for batches
// (each half-vector's codes reused by 4 tokens). Batch policy `Batch` decodes codes; `Few`
// serves the remaining 1-3 tokens.
template <class Batch, class Few>
void matmul_ymm(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
                int64_t y_stride, int64_t row_begin, int64_t row_end) {
  int64_t n = 0;
  for (; n + 4 <= n_tokens; n += 4)
    groups_loop<Batch, 4>(w, acts, n, y, y_stride, row_begin, row_end);
  with_remaining_tokens(n_tokens - n, [&]<int NT>() {
    groups_loop<Few, NT>(w, acts, n, y, y_stride, row_begin, row_end);
  });
}
// T5Few: how 1-3 tokens multiply t5 rows (decoded codes, or the carry identity, which costs two
// dot products per plane and token but no decoding).
template <class Dot, class T5Few>
void matmul_ymm_any_format(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  using T5Codes = CodesPolicy<T5HalfDecoder, Dot>;
  using I2Codes = CodesPolicy<I2HalfDecoder, Dot>;
  if (n_tokens >= kYmmStreamMinTokens && n_tokens <= Dot::kStreamMaxTokens) {
    auto streamed = [&]<class D>() {
      with_streamed_tokens<Dot::kStreamMaxTokens>(n_tokens, [&]<int NT>() {
        for_each_half_group(row_begin, row_end, [&](int64_t g, int h) {
          half_group_streamed<D, Dot, NT>(w, acts, y, y_stride, g, h, row_begin, row_end);
        });
      });
    };
    if (w.format == TernaryFormat::t5) {
      streamed.template operator()<T5HalfDecoder>();
    } else {
      streamed.template operator()<I2HalfDecoder>();
    }
    return;
  }
  if (n_tokens >= kYmmTileMinTokens && w.format == TernaryFormat::t5) {
    matmul_tiled<T5HalfDecoder, Dot>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (n_tokens >= kYmmTileMinTokens) {
    matmul_tiled<I2HalfDecoder, Dot>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (w.format == TernaryFormat::t5 && w.cols <= T5Few::kMaxCols) {
    matmul_ymm<T5Codes, T5Few>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (w.format == TernaryFormat::t5) {
    matmul_ymm<T5Codes, T5Codes>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else {
    matmul_ymm<I2Codes, I2Codes>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  }
}

}  // namespace
}  // namespace bitnet
