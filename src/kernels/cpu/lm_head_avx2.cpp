// AVX2 lm_head matvec: four rows at a time share each load of x; a row's 16-lane accumulator is
// a pair of ymm registers (lanes 0-7, 8-15), in the canonical order of canonical_math.h.
#include <algorithm>

#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/simd_avx2.h"

namespace bitnet {
namespace {

constexpr int kTileRows = 4;

__m256 widen_bf16(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

__m256 widen_int8(const int8_t* p) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

template <int R>
void bf16_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  __m256 lo[R], hi[R];
  const uint16_t* w[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    lo[i] = hi[i] = _mm256_setzero_ps();
    w[i] = head.bf16 + (r0 + i) * head.cols;
  }
  const int64_t full = head.cols / kLanes * kLanes;
  for (int64_t k = 0; k < full; k += kLanes) {
    const __m256 x_lo = _mm256_loadu_ps(x + k), x_hi = _mm256_loadu_ps(x + k + 8);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      lo[i] = _mm256_fmadd_ps(widen_bf16(w[i] + k), x_lo, lo[i]);
      hi[i] = _mm256_fmadd_ps(widen_bf16(w[i] + k + 8), x_hi, hi[i]);
    }
  }
  if (full < head.cols) {  // rows are unpadded: widen a zero-padded copy of the tail
    const __m256 x_lo = _mm256_loadu_ps(x + full), x_hi = _mm256_loadu_ps(x + full + 8);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      uint16_t tail[kLanes] = {};
      std::copy(w[i] + full, w[i] + head.cols, tail);
      lo[i] = _mm256_fmadd_ps(widen_bf16(tail), x_lo, lo[i]);
      hi[i] = _mm256_fmadd_ps(widen_bf16(tail + 8), x_hi, hi[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) y[r0 + i] = avx2::reduce_lanes(lo[i], hi[i]);
}

template <int R>
void int8_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  __m256 lo[R], hi[R];
  const int8_t* q[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    lo[i] = hi[i] = _mm256_setzero_ps();
    q[i] = reinterpret_cast<const int8_t*>(head.codes + (r0 + i) * head.row_bytes());
  }
  const int64_t end = (head.cols + kLanes - 1) / kLanes * kLanes;
  for (int64_t k = 0; k < end; k += kLanes) {
    const __m256 x_lo = _mm256_loadu_ps(x + k), x_hi = _mm256_loadu_ps(x + k + 8);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      lo[i] = _mm256_fmadd_ps(widen_int8(q[i] + k), x_lo, lo[i]);
      hi[i] = _mm256_fmadd_ps(widen_int8(q[i] + k + 8), x_hi, hi[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    y[r0 + i] = avx2::reduce_lanes(lo[i], hi[i]) * head.row_scales[r0 + i];
}

// Lanes j..j+7 of a group: bytes j..j+7 hold elements j..j+7 (low nibbles) and j+16..j+23.
__m256 q4_half_dot(const uint8_t* bytes, const float* x) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
  const __m256i offset = _mm256_set1_epi32(8);
  const __m256 lo =
      _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(15)), offset));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 4), offset));
  return _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + kLanes), _mm256_mul_ps(lo, _mm256_loadu_ps(x)));
}

template <int R>
void q4_rows(const LmHead& head, const float* x, float* y, int64_t r0) {
  const int64_t groups = head.groups();
  __m256 lo[R], hi[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x + g * kQ4Group;
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const uint8_t* bytes = head.codes + (r0 + i) * head.row_bytes() + g * kQ4Group / 2;
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(head.group_scales[(r0 + i) * groups + g]));
      lo[i] = _mm256_fmadd_ps(q4_half_dot(bytes, xg), d, lo[i]);
      hi[i] = _mm256_fmadd_ps(q4_half_dot(bytes + 8, xg + 8), d, hi[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) y[r0 + i] = avx2::reduce_lanes(lo[i], hi[i]);
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

void lm_head_matvec_avx2(const LmHead& head, const float* x, float* y, int64_t row_begin,
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
