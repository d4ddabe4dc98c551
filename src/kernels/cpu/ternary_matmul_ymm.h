#pragma once
// 256-bit ternary matmul, shared by ternary_matmul_avx2.cpp (vpmaddubsw + vpmaddwd) and
// ternary_matmul_avxvnni.cpp (VEX vpdpbusd), which pass their dot product as `Dot`. Everything
// is in an anonymous namespace: each includer compiles it with its own target flags, and the
// linker must never merge the two.
//
// A 64-byte block is handled as two 32-byte halves: half h of plane i holds the codes of
// weights 64i + 32h + [0, 32) (ternary_layout_*.h). R rows x NT tokens at a time share the
// decoded codes across tokens and the activation loads across rows; horizontal reductions
// happen once per row after the block loop. The AVX2 path keeps this one kernel for every
// token count (AVX-512 machines use the register-tiled GEMM of ternary_matmul_avx512.cpp).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

struct I2HalfDecoder {
  static constexpr int kPlanes = 4;
  static constexpr int64_t kBlock = kI2Block;
  static void decode(__m256i bytes, __m256i codes[kPlanes]) {
    const __m256i mask = _mm256_set1_epi8(3);
#pragma GCC unroll 16
    for (int i = 0; i < kPlanes; ++i)
      codes[i] = _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * i), mask);
  }
};

// t5 digit i of byte p is (3 * x_i) >> 8 with x_0 = p, x_{i+1} = (3 * x_i) mod 256
// (ternary_layout_t5.h); vpmaddubsw forms 3 * x of the even and the odd bytes as 16-bit words.
struct T5HalfDecoder {
  static constexpr int kPlanes = kT5Planes;
  static constexpr int64_t kBlock = kT5Block;
  static void decode(__m256i bytes, __m256i codes[kPlanes]) {
    const __m256i times3_even = _mm256_set1_epi16(3);
    const __m256i times3_odd = _mm256_set1_epi16(3 << 8);
    const __m256i high_bytes = _mm256_set1_epi16(static_cast<int16_t>(0xFF00));
    __m256i x = bytes;
#pragma GCC unroll 16
    for (int i = 0; i < kPlanes; ++i) {
      const __m256i even = _mm256_maddubs_epi16(x, times3_even);
      const __m256i odd = _mm256_maddubs_epi16(x, times3_odd);
      codes[i] = _mm256_or_si256(_mm256_srli_epi16(even, 8), _mm256_and_si256(odd, high_bytes));
      if (i + 1 < kPlanes)
        x = _mm256_or_si256(_mm256_andnot_si256(high_bytes, even), _mm256_slli_epi16(odd, 8));
    }
  }
};

inline int32_t reduce_add(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// See kGemvPrefetchBytes in ternary_matmul_avx512.cpp.
constexpr int64_t kYmmPrefetchBytes = 8192;

// Policy for any decoder: codes of each plane times that plane's activations, alternating
// between two accumulators so consecutive dot products never wait on each other.
template <class D, class Dot>
struct CodesPolicy {
  static constexpr int64_t kBlock = D::kBlock;
  static constexpr int64_t kMaxCols = INT64_MAX;
  template <int NT>
  static void accumulate(__m256i bytes, const int8_t* q, int64_t q_stride, __m256i acc[NT][2]) {
    __m256i codes[D::kPlanes];
    D::decode(bytes, codes);
#pragma GCC unroll 16
    for (int i = 0; i < D::kPlanes; ++i) {
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        const __m256i qv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + n * q_stride + 64 * i));
        acc[n][i % 2] = Dot::dot(acc[n][i % 2], codes[i], qv);
      }
    }
  }
  static int32_t finish(__m256i a, __m256i b) {
    return reduce_add(_mm256_add_epi32(a, b));
  }
};

// t5 without decoding digits, for exact u8 x s8 dot products (VNNI): see T5CarryGemv in
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
        const __m256i qv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + n * q_stride + 64 * i));
        acc[n][0] = Dot::dot(acc[n][0], x, qv);
        acc[n][1] = Dot::dot(acc[n][1], next, qv);
      }
      x = next;
    }
  }
  static int32_t finish(__m256i a, __m256i b) {
    const __m256i three_a_minus_b =
        _mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(a, a), a), b);
    return reduce_add(three_a_minus_b) >> 8;
  }
};

// R rows x NT tokens, two accumulators each.
template <class P, int R, int NT>
void rows_times_tokens(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n0, float* y,
                       int64_t y_stride, int64_t r0) {
  const int64_t row_bytes = w.row_bytes();
  const int64_t blocks = row_bytes / 64;
  const uint8_t* rows = w.row(r0);
  const int8_t* q = acts.q.data() + n0 * acts.stride;
  __m256i acc[R][NT][2];
#pragma GCC unroll 16
  for (auto& per_row : acc)
#pragma GCC unroll 16
    for (auto& per_token : per_row) per_token[0] = per_token[1] = _mm256_setzero_si256();
  for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows + r * row_bytes + b * 64;
      _mm_prefetch(reinterpret_cast<const char*>(block + kYmmPrefetchBytes), _MM_HINT_T0);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        P::template accumulate<NT>(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * h)),
            q + b * P::kBlock + 32 * h, acts.stride, acc[r]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      const int32_t dot = P::finish(acc[r][n][0], acc[r][n][1]) - acts.sum[n0 + n];
      y[(n0 + n) * y_stride + r0 + r] =
          static_cast<float>(dot) / acts.scale[n0 + n] * w.row_scales[r0 + r];
    }
  }
}

// R rows at a time (then single rows) for NT tokens.
template <class P, int R, int NT>
void rows_loop(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n0, float* y,
               int64_t y_stride, int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) rows_times_tokens<P, R, NT>(w, acts, n0, y, y_stride, r);
  for (; r < row_end; ++r) rows_times_tokens<P, 1, NT>(w, acts, n0, y, y_stride, r);
}

// Shapes keep at most 8 accumulators of the 16 ymm registers: 4 rows x 1 token for decoding
// (activation loads shared by 4 rows), and 1 row x 4 tokens for batches (each row's codes
// reused by 4 tokens). Batch policy `Batch` decodes codes (once per row for 4 tokens); `Few`
// serves the remaining 1-3 tokens.
template <class Batch, class Few>
void matmul_ymm(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
                int64_t y_stride, int64_t row_begin, int64_t row_end) {
  int64_t n = 0;
  for (; n + 4 <= n_tokens; n += 4)
    rows_loop<Batch, 1, 4>(w, acts, n, y, y_stride, row_begin, row_end);
  switch (n_tokens - n) {
    case 3:
      rows_loop<Few, 1, 3>(w, acts, n, y, y_stride, row_begin, row_end);
      break;
    case 2:
      rows_loop<Few, 2, 2>(w, acts, n, y, y_stride, row_begin, row_end);
      break;
    case 1:
      rows_loop<Few, 4, 1>(w, acts, n, y, y_stride, row_begin, row_end);
      break;
    default:
      break;
  }
}

// T5Few: how 1-3 tokens multiply t5 rows (decoded codes, or the carry identity, which costs two
// dot products per plane and token but no decoding).
template <class Dot, class T5Few>
void matmul_ymm_any_format(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  using T5Codes = CodesPolicy<T5HalfDecoder, Dot>;
  using I2Codes = CodesPolicy<I2HalfDecoder, Dot>;
  if (w.format == TernaryFormat::t5 && w.cols <= T5Few::kMaxCols) {
    matmul_ymm<T5Codes, T5Few>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (w.format == TernaryFormat::t5) {
    matmul_ymm<T5Codes, T5Codes>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else {
    matmul_ymm<I2Codes, I2Codes>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  }
}

}  // namespace
}  // namespace bitnet
