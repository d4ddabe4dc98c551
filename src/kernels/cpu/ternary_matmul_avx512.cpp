// AVX-512 VNNI ternary matmul: one 64-byte load of packed codes feeds four vpdpbusd.
#include <immintrin.h>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

// One row against NT tokens. Four accumulators per token break vpdpbusd's dependency chain.
template <int NT>
void row_times_tokens(const uint8_t* row, const QuantizedActs& acts, int64_t n0, int64_t blocks,
                      float row_scale, float* y, int64_t y_stride, int64_t r) {
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[NT][4];
  for (int n = 0; n < NT; ++n)
    for (int i = 0; i < 4; ++i) acc[n][i] = _mm512_setzero_si512();
  const int8_t* q0 = acts.q.data() + n0 * acts.stride;
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512i w = _mm512_loadu_si512(row + b * kTernaryBlockBytes);
    const __m512i c[4] = {_mm512_and_si512(w, mask),
                          _mm512_and_si512(_mm512_srli_epi16(w, 2), mask),
                          _mm512_and_si512(_mm512_srli_epi16(w, 4), mask),
                          _mm512_and_si512(_mm512_srli_epi16(w, 6), mask)};
    for (int n = 0; n < NT; ++n) {
      const int8_t* q = q0 + n * acts.stride + b * kTernaryBlock;
      for (int i = 0; i < 4; ++i) {
        acc[n][i] = _mm512_dpbusd_epi32(acc[n][i], c[i], _mm512_loadu_si512(q + 64 * i));
      }
    }
  }
  for (int n = 0; n < NT; ++n) {
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(acc[n][0], acc[n][1]),
                                 _mm512_add_epi32(acc[n][2], acc[n][3]));
    const int32_t dot = _mm512_reduce_add_epi32(s) - acts.sum[n0 + n];
    y[(n0 + n) * y_stride + r] = static_cast<float>(dot) / acts.scale[n0 + n] * row_scale;
  }
}

}  // namespace

void ternary_matmul_avx512(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
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
