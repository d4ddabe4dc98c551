// AVX-512 lm_head matvec: four rows at a time share each load of x; one 16-lane accumulator per
// row in the canonical order (canonical_math.h), so results equal the scalar kernel's.
#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/simd_avx512.h"

namespace bitnet {
namespace {

constexpr int kTileRows = 4;

__m512 widen_bf16(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

template <int R>
void bf16_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  __m512 acc[R];
  const uint16_t* w[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    acc[i] = _mm512_setzero_ps();
    w[i] = head.bf16 + (r0 + i) * head.cols;
  }
  const int64_t full = head.cols / kLanes * kLanes;
  for (int64_t k = 0; k < full; k += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
      acc[i] = _mm512_fmadd_ps(
          widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i] + k))), xv, acc[i]);
  }
  if (full < head.cols) {  // rows are unpadded: mask the tail (x is zero-padded)
    const __mmask16 mask = static_cast<__mmask16>((1u << (head.cols - full)) - 1);
    const __m512 xv = _mm512_loadu_ps(x + full);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
      acc[i] = _mm512_fmadd_ps(widen_bf16(_mm256_maskz_loadu_epi16(mask, w[i] + full)), xv, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) y[r0 + i] = avx512::reduce_lanes(acc[i]);
}

template <int R>
void int8_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  __m512 acc[R];
  const int8_t* q[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    acc[i] = _mm512_setzero_ps();
    q[i] = reinterpret_cast<const int8_t*>(head.codes + (r0 + i) * head.row_bytes());
  }
  const int64_t end = (head.cols + kLanes - 1) / kLanes * kLanes;
  for (int64_t k = 0; k < end; k += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q[i] + k));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes)), xv, acc[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) y[r0 + i] = avx512::reduce_lanes(acc[i]) * head.row_scales[r0 + i];
}

template <int R>
void q4_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  const int64_t groups = head.groups();
  __m512 acc[R];
  const uint8_t* row[R];
  const uint16_t* scales[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    acc[i] = _mm512_setzero_ps();
    row[i] = head.codes + (r0 + i) * head.row_bytes();
    scales[i] = head.group_scales.data() + (r0 + i) * groups;
  }
  const __m512i low_mask = _mm512_set1_epi32(15), offset = _mm512_set1_epi32(8);
  for (int64_t g = 0; g < groups; ++g) {
    const __m512 x_lo = _mm512_loadu_ps(x + g * kQ4Group);
    const __m512 x_hi = _mm512_loadu_ps(x + g * kQ4Group + kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512i b = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + g * kQ4Group / 2)));
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(b, low_mask), offset));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(b, 4), offset));
      const __m512 dot = _mm512_fmadd_ps(hi, x_hi, _mm512_mul_ps(lo, x_lo));
      acc[i] = _mm512_fmadd_ps(dot, _mm512_set1_ps(_cvtsh_ss(scales[i][g])), acc[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) y[r0 + i] = avx512::reduce_lanes(acc[i]);
}

template <LmHeadFormat F, int R>
void tile(const LmHead& head, const float* x, float* y, int64_t r0) {
  if constexpr (F == LmHeadFormat::bf16) bf16_rows<R>(head, x, y, r0);
  if constexpr (F == LmHeadFormat::int8) int8_rows<R>(head, x, y, r0);
  if constexpr (F == LmHeadFormat::q4) q4_rows<R>(head, x, y, r0);
}

template <LmHeadFormat F>
void run_rows(const LmHead& head, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  for (; r + kTileRows <= row_end; r += kTileRows) tile<F, kTileRows>(head, x, y, r);
  for (; r < row_end; ++r) tile<F, 1>(head, x, y, r);
}

}  // namespace

void lm_head_matvec_avx512(const LmHead& head, const float* x, float* y, int64_t row_begin,
                           int64_t row_end) {
  switch (head.format) {
    case LmHeadFormat::bf16:
      return run_rows<LmHeadFormat::bf16>(head, x, y, row_begin, row_end);
    case LmHeadFormat::int8:
      return run_rows<LmHeadFormat::int8>(head, x, y, row_begin, row_end);
    case LmHeadFormat::q4:
      return run_rows<LmHeadFormat::q4>(head, x, y, row_begin, row_end);
  }
}

}  // namespace bitnet
