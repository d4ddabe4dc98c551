// AVX2 ternary matmul: vpmaddubsw (codes u8 x activations s8 -> s16, at most 2*2*128, so it
// never saturates) then vpmaddwd against ones -> s32.
#include <immintrin.h>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

inline __m256i dot_u8_s8(__m256i acc, __m256i codes, __m256i q) {
  const __m256i ones = _mm256_set1_epi16(1);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, q), ones));
}

inline int32_t reduce_add(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

template <int NT>
void row_times_tokens(const uint8_t* row, const QuantizedActs& acts, int64_t n0, int64_t blocks,
                      float row_scale, float* y, int64_t y_stride, int64_t r) {
  const __m256i mask = _mm256_set1_epi8(3);
  __m256i acc[NT][2];
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = _mm256_setzero_si256();
  const int8_t* q0 = acts.q.data() + n0 * acts.stride;
  for (int64_t b = 0; b < blocks; ++b) {
    // A block's 64 bytes are two 32-byte halves: half h holds weights 64i + 32h + [0, 32).
    for (int h = 0; h < 2; ++h) {
      const __m256i w = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(row + b * kTernaryBlockBytes + 32 * h));
      const __m256i c[4] = {_mm256_and_si256(w, mask),
                            _mm256_and_si256(_mm256_srli_epi16(w, 2), mask),
                            _mm256_and_si256(_mm256_srli_epi16(w, 4), mask),
                            _mm256_and_si256(_mm256_srli_epi16(w, 6), mask)};
      for (int n = 0; n < NT; ++n) {
        const int8_t* q = q0 + n * acts.stride + b * kTernaryBlock + 32 * h;
        for (int i = 0; i < 4; ++i) {
          const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * i));
          acc[n][i & 1] = dot_u8_s8(acc[n][i & 1], c[i], qv);
        }
      }
    }
  }
  for (int n = 0; n < NT; ++n) {
    const int32_t dot = reduce_add(_mm256_add_epi32(acc[n][0], acc[n][1])) - acts.sum[n0 + n];
    y[(n0 + n) * y_stride + r] = static_cast<float>(dot) / acts.scale[n0 + n] * row_scale;
  }
}

}  // namespace

void ternary_matmul_avx2(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                         float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = acts.stride / kTernaryBlock;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.row(r);
    const float scale = w.row_scales[r];
    int64_t n = 0;
    for (; n + 4 <= n_tokens; n += 4)
      row_times_tokens<4>(row, acts, n, blocks, scale, y, y_stride, r);
    for (; n < n_tokens; ++n) row_times_tokens<1>(row, acts, n, blocks, scale, y, y_stride, r);
  }
}

}  // namespace bitnet
