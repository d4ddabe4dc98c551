// AVX2 lm_head matvec: four rows at a time share each load of x (int8 with several inputs: two
// rows, each widened code vector shared by up to four inputs). For bf16 and q4 a row's 16-lane
// fp32 accumulator is a pair of ymm registers (lanes 0-7, 8-15), in the canonical order of
// canonical_math.h; int8 sums codes x int16 exactly with vpmaddwd. Either way results equal the
// scalar kernel's.
#include <algorithm>

#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/simd_avx2.h"

namespace bitnet {
namespace {

constexpr int kTileRows = 4;
// As in lm_head_avx512.cpp: the tile's rows are adjacent, so this streams the head linearly.
constexpr int64_t kPrefetchBytes = 16384;

__m256 widen_bf16(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

template <int R>
void bf16_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0) {
  const float* x = in.x.data();
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
      _mm_prefetch(reinterpret_cast<const char*>(w[i] + k) + kPrefetchBytes, _MM_HINT_T0);
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

// Each vpmaddwd gives two code x q products per int32 lane; input_limit() keeps a lane's whole
// sum in range, and the lanes are added in int64. R rows x NT inputs: each code vector is widened
// once for all NT inputs (batched decode), each input load serves R rows.
template <int R, int NT>
void int8_rows(const LmHead& head, const LmHeadInput* in, float* y, int64_t y_stride, int64_t r0) {
  __m256i acc[R][NT];
  const int8_t* codes[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) acc[i][n] = _mm256_setzero_si256();
    codes[i] = reinterpret_cast<const int8_t*>(head.codes + (r0 + i) * head.row_bytes());
  }
  const int64_t end = head.padded_cols();
  for (int64_t k = 0; k < end; k += 16) {
    __m256i w[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      if (k % 64 == 0)
        _mm_prefetch(reinterpret_cast<const char*>(codes[i] + k + kPrefetchBytes), _MM_HINT_T0);
      w[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes[i] + k)));
    }
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in[n].q.data() + k));
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i)
        acc[i][n] = _mm256_add_epi32(acc[i][n], _mm256_madd_epi16(w[i], q));
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      alignas(32) int32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[i][n]);
      int64_t dot = 0;
      for (int32_t lane : lanes) dot += lane;
      y[n * y_stride + r0 + i] = static_cast<float>(dot) / in[n].scale * head.row_scales[r0 + i];
    }
  }
}

// Rows [row_begin, row_end) for NT inputs: 4 rows at a time for one input, 2 for more (R x NT
// accumulators, the widened codes and an input within the 16 ymm registers).
template <int NT>
void int8_run(const LmHead& head, const LmHeadInput* in, float* y, int64_t y_stride,
              int64_t row_begin, int64_t row_end) {
  constexpr int R = NT == 1 ? kTileRows : 2;
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) int8_rows<R, NT>(head, in, y, y_stride, r);
  for (; r < row_end; ++r) int8_rows<1, NT>(head, in, y, y_stride, r);
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
void q4_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0) {
  const float* x = in.x.data();
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
void tile(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0) {
  if constexpr (F == LmHeadFormat::bf16) bf16_rows<R>(head, in, y, r0);
  if constexpr (F == LmHeadFormat::q4) q4_rows<R>(head, in, y, r0);
}

template <LmHeadFormat F>
void run_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t row_begin,
              int64_t row_end) {
  int64_t r = row_begin;
  for (; r + kTileRows <= row_end; r += kTileRows) tile<F, kTileRows>(head, in, y, r);
  for (; r < row_end; ++r) tile<F, 1>(head, in, y, r);
}

}  // namespace

void lm_head_matvec_avx2(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                         int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (head.format == LmHeadFormat::int8) {
    constexpr size_t kMaxInputs = 4;  // 2 rows x 4 inputs: 8 accumulators
    for (size_t n0 = 0; n0 < ins.size(); n0 += kMaxInputs) {
      const LmHeadInput* in = ins.data() + n0;
      float* out = y + static_cast<int64_t>(n0) * y_stride;
      const size_t n = std::min(kMaxInputs, ins.size() - n0);
      if (n == 4) int8_run<4>(head, in, out, y_stride, row_begin, row_end);
      if (n == 3) int8_run<3>(head, in, out, y_stride, row_begin, row_end);
      if (n == 2) int8_run<2>(head, in, out, y_stride, row_begin, row_end);
      if (n == 1) int8_run<1>(head, in, out, y_stride, row_begin, row_end);
    }
    return;
  }
  for (size_t n = 0; n < ins.size(); ++n) {
    float* out = y + static_cast<int64_t>(n) * y_stride;
    if (head.format == LmHeadFormat::bf16) {
      run_rows<LmHeadFormat::bf16>(head, ins[n], out, row_begin, row_end);
    } else {
      run_rows<LmHeadFormat::q4>(head, ins[n], out, row_begin, row_end);
    }
  }
}

}  // namespace bitnet
