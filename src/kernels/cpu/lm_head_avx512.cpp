// AVX-512 lm_head matvec: four rows at a time share each load of x. bf16 and q4 keep one 16-lane
// fp32 accumulator per row in the canonical order (canonical_math.h); int8 sums codes x int16
// exactly with vpdpwssd. Either way results equal the scalar kernel's.
#include <algorithm>

#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/simd_avx512.h"

namespace bitnet {
namespace {

constexpr int kTileRows = 4;
// The tile's rows are adjacent, so prefetching each this far ahead streams the head linearly,
// far enough ahead to cover DRAM latency (as the ternary GEMV).
constexpr int64_t kPrefetchBytes = 16384;

__m512 widen_bf16(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

template <int R>
void bf16_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0) {
  const float* x = in.x.data();
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
    for (int i = 0; i < R; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(w[i] + k) + kPrefetchBytes, _MM_HINT_T0);
      acc[i] = _mm512_fmadd_ps(
          widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i] + k))), xv, acc[i]);
    }
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

// Row sums of int8_rows, stored by a separate function: inlined, its register needs made GCC
// copy and spill the accumulators inside the multiply loop.
template <int R, int NT>
struct Int8Sums {
  __m512i acc[R][NT];
};

// A row's 16 int32 lanes as 8 int64 lanes. Two lanes hold padded_cols / 8 products, which
// input_limit() keeps within int32.
inline __m512i lane_pairs(__m512i a) {
  return _mm512_cvtepi32_epi64(
      _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1)));
}

// Lane k of the result: the sum of v[k]'s 8 int64 lanes. A transposing tree: each step adds
// neighbouring lanes (then 128-bit blocks) of two vectors, interleaving their sums, so that 8
// vectors end as one.
inline __m512i sum_lanes_of_8(const __m512i v[8]) {
  __m512i pair[4], quad[2];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k)  // block j: [v[2k] lanes 2j + 2j+1, v[2k+1] the same]
    pair[k] = _mm512_add_epi64(_mm512_unpacklo_epi64(v[2 * k], v[2 * k + 1]),
                               _mm512_unpackhi_epi64(v[2 * k], v[2 * k + 1]));
#pragma GCC unroll 2
  for (int k = 0; k < 2; ++k)  // block 2h + b: the sum of blocks 2b and 2b + 1 of pair[2k + h]
    quad[k] = _mm512_add_epi64(_mm512_shuffle_i64x2(pair[2 * k], pair[2 * k + 1], 0b10001000),
                               _mm512_shuffle_i64x2(pair[2 * k], pair[2 * k + 1], 0b11011101));
  return _mm512_add_epi64(_mm512_shuffle_i64x2(quad[0], quad[1], 0b10001000),
                          _mm512_shuffle_i64x2(quad[0], quad[1], 0b11011101));
}

template <int R, int NT>
[[gnu::noinline]] void store_int8_rows(const Int8Sums<R, NT>& sums, const LmHead& head,
                                       const LmHeadInput* in, float* y, int64_t y_stride,
                                       int64_t r0) {
  if constexpr (R == 4 && NT % 2 == 0) {
    // Two inputs at a time: 8 row sums reduced together, then scaled as the scalar kernel does
    // (float(dot) / scale * row_scale) 8 lanes at a time.
    const __m128 row_scales = _mm_loadu_ps(head.row_scales.data() + r0);
    const __m256 both_row_scales =
        _mm256_insertf128_ps(_mm256_castps128_ps256(row_scales), row_scales, 1);
#pragma GCC unroll 4
    for (int n = 0; n < NT; n += 2) {
      __m512i v[8];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        v[i] = lane_pairs(sums.acc[i][n]);
        v[R + i] = lane_pairs(sums.acc[i][n + 1]);
      }
      const __m256 dots = _mm512_cvtepi64_ps(sum_lanes_of_8(v));
      const __m256 input_scales = _mm256_insertf128_ps(
          _mm256_castps128_ps256(_mm_set1_ps(in[n].scale)), _mm_set1_ps(in[n + 1].scale), 1);
      const __m256 out = _mm256_mul_ps(_mm256_div_ps(dots, input_scales), both_row_scales);
      _mm_storeu_ps(y + n * y_stride + r0, _mm256_castps256_ps128(out));
      _mm_storeu_ps(y + (n + 1) * y_stride + r0, _mm256_extractf128_ps(out, 1));
    }
    return;
  }
  for (int i = 0; i < R; ++i) {
    for (int n = 0; n < NT; ++n) {
      const int64_t dot = _mm512_reduce_add_epi64(lane_pairs(sums.acc[i][n]));
      y[n * y_stride + r0 + i] = static_cast<float>(dot) / in[n].scale * head.row_scales[r0 + i];
    }
  }
}

// Each vpdpwssd adds two code x q products into each of 16 int32 lanes; input_limit() keeps a
// lane's whole sum in range, and the lanes are added in int64. R rows x NT inputs: each code
// vector is widened once for all NT inputs (batched decode), each input load serves R rows.
// Fewer than 4 rows x inputs would leave the vpdpwssd waiting on each other's latency, so each
// keeps C = 4 / (R x NT) accumulators, one per 32 columns in turn, added in int32 at the end
// (an exact integer sum in any order).
template <int R, int NT, _mm_hint kHint, bool kPrefetch = true>
[[gnu::always_inline]] inline void int8_sums(const LmHead& head, const LmHeadInput* in, int64_t r0,
                                             int64_t prefetch_bytes, Int8Sums<R, NT>& sums) {
  constexpr int C = R * NT >= 4 ? 1 : 4 / (R * NT);
  constexpr int kStep = C > 2 ? 128 : 64;  // columns per iteration: one accumulator per 32
  __m512i acc[C][R][NT];
  const int8_t* codes[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) acc[c][i][n] = _mm512_setzero_si512();
    codes[i] = reinterpret_cast<const int8_t*>(head.codes + (r0 + i) * head.row_bytes());
  }
  const int64_t end = head.padded_cols();  // a multiple of 64
  auto multiply = [&](int64_t k, int c) {
    __m512i w[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      w[i] =
          _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes[i] + k)));
    }
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      __m512i q = _mm512_loadu_si512(in[n].q.data() + k);
      __asm__("" : "+v"(q));  // one load for the R rows, not one folded into each vpdpwssd
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[c][i][n] = _mm512_dpwssd_epi32(acc[c][i][n], w[i], q);
    }
  };
  int64_t k = 0;
  for (; k + kStep <= end; k += kStep) {
    if constexpr (kPrefetch) {
#pragma GCC unroll 16
      for (int line = 0; line < kStep; line += 64)
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i)
          _mm_prefetch(reinterpret_cast<const char*>(codes[i] + k + line + prefetch_bytes), kHint);
    }
#pragma GCC unroll 4
    for (int part = 0; part < kStep / 32; ++part) multiply(k + 32 * part, part % C);
  }
  for (; k < end; k += 32) multiply(k, 0);  // the last 64 columns of an odd count, for C = 4
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      sums.acc[i][n] = acc[0][i][n];
#pragma GCC unroll 4
      for (int c = 1; c < C; ++c) sums.acc[i][n] = _mm512_add_epi32(sums.acc[i][n], acc[c][i][n]);
    }
}

template <int R, int NT, _mm_hint kHint>
void int8_rows(const LmHead& head, const LmHeadInput* in, float* y, int64_t y_stride, int64_t r0,
               int64_t prefetch_bytes) {
  Int8Sums<R, NT> sums;
  int8_sums<R, NT, kHint>(head, in, r0, prefetch_bytes, sums);
  store_int8_rows<R, NT>(sums, head, in, y, y_stride, r0);
}

// One input, rows one at a time (decode's stream): 8 rows' sums are reduced and stored together,
// as store_int8_rows does for 4 rows x 2 inputs; one row at a time the reduction and the call
// took a tenth of the head's time.
template <bool kPrefetch>
void int8_rows_of_8(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0,
                    int64_t prefetch_bytes) {
  __m512i v[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    Int8Sums<1, 1> sums;
    int8_sums<1, 1, _MM_HINT_NTA, kPrefetch>(head, &in, r0 + i, prefetch_bytes, sums);
    v[i] = lane_pairs(sums.acc[0][0]);
  }
  const __m256 dots = _mm512_cvtepi64_ps(sum_lanes_of_8(v));
  const __m256 out = _mm256_mul_ps(_mm256_div_ps(dots, _mm256_set1_ps(in.scale)),
                                   _mm256_loadu_ps(head.row_scales.data() + r0));
  _mm256_storeu_ps(y + r0, out);
}

template <int R, int NT, _mm_hint kHint>
void int8_run(const LmHead& head, const LmHeadInput* in, float* y, int64_t y_stride,
              int64_t row_begin, int64_t row_end, int64_t prefetch_bytes) {
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R)
    int8_rows<R, NT, kHint>(head, in, y, y_stride, r, prefetch_bytes);
  for (; r < row_end; ++r) int8_rows<1, NT, kHint>(head, in, y, y_stride, r, prefetch_bytes);
}

enum class Pass {
  only,   // the inputs' one pass over the rows
  first,  // the first of several: the rows must stay in L2 for the others
  later,  // rows the first pass left in L2
};

// One input in one pass (decode) reads the rows one at a time, as one sequential stream, with
// non-temporal prefetches (kL1Prefetch) or none: 4 rows side by side read as 4 streams ran 10-20%
// slower than a plain read loop over the same head, one row at a time as fast (standalone, 1 and
// 2 threads, Zen 5). On Zen 4 the prefetches held that stream to 2/3 of the read loop's rate
// (CpuFeatures::amd_zen4), so its kernel (kL1Prefetch false) leaves it to the hardware.
//
// Several inputs take 4 rows side by side, 4 short streams that the hardware prefetchers follow
// poorly, so they prefetch 16 KB ahead: into L1 (kL1Prefetch, as measured on Zen 5) or into L2.
// On Zen 4, from DRAM, 2 and 4 inputs read 12-13 GB/s into L1 and 23-25 GB/s into L2 on 1 thread,
// 23-25 and 31-47 on 2 (lm_head_batch/int8); 8 inputs, bound by compute, alike.
//
// Inputs past the first kMaxInputs take further passes over rows the first pass left in L2; those
// run bound by compute while memory would idle, so they prefetch the next range of as many rows
// (the caller's next block of the head) into L2 for the next first pass. 8 inputs, 2 threads:
// 13.7 -> 12.6 ms per step on average over alternating runs.
template <int NT, bool kL1Prefetch>
void int8_pass(const LmHead& head, const LmHeadInput* in, float* y, int64_t y_stride,
               int64_t row_begin, int64_t row_end, Pass pass) {
  constexpr int64_t kStreamPrefetchBytes = 8192;
  if (NT == 1 && pass == Pass::only) {
    int64_t r = row_begin;
    for (; r + 8 <= row_end; r += 8)
      int8_rows_of_8<kL1Prefetch>(head, *in, y, r, kStreamPrefetchBytes);
    int8_run<1, NT, _MM_HINT_NTA>(head, in, y, y_stride, r, row_end, kStreamPrefetchBytes);
  } else if (pass != Pass::later) {
    constexpr _mm_hint kHint = kL1Prefetch ? _MM_HINT_T0 : _MM_HINT_T1;
    int8_run<kTileRows, NT, kHint>(head, in, y, y_stride, row_begin, row_end, kPrefetchBytes);
  } else {
    const int64_t range_bytes = (row_end - row_begin) * head.row_bytes();
    int8_run<kTileRows, NT, _MM_HINT_T1>(head, in, y, y_stride, row_begin, row_end, range_bytes);
  }
}

template <int R>
void q4_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t r0) {
  const float* x = in.x.data();
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

constexpr int kMaxInputs = 4;  // R x NT = 16 accumulators

template <bool kL1Prefetch>
void matvec(const LmHead& head, std::span<const LmHeadInput> ins, float* y, int64_t y_stride,
            int64_t row_begin, int64_t row_end) {
  for (size_t n0 = 0; n0 < ins.size(); n0 += kMaxInputs) {
    const LmHeadInput* in = ins.data() + n0;
    float* out = y + static_cast<int64_t>(n0) * y_stride;
    const int n = static_cast<int>(std::min<size_t>(kMaxInputs, ins.size() - n0));
    const Pass pass = n0 > 0 ? Pass::later : ins.size() > kMaxInputs ? Pass::first : Pass::only;
    switch (head.format) {
      case LmHeadFormat::int8:
        if (n == 4) int8_pass<4, kL1Prefetch>(head, in, out, y_stride, row_begin, row_end, pass);
        if (n == 3) int8_pass<3, kL1Prefetch>(head, in, out, y_stride, row_begin, row_end, pass);
        if (n == 2) int8_pass<2, kL1Prefetch>(head, in, out, y_stride, row_begin, row_end, pass);
        if (n == 1) int8_pass<1, kL1Prefetch>(head, in, out, y_stride, row_begin, row_end, pass);
        break;
      case LmHeadFormat::bf16:
        for (int i = 0; i < n; ++i)
          run_rows<LmHeadFormat::bf16>(head, in[i], out + i * y_stride, row_begin, row_end);
        break;
      case LmHeadFormat::q4:
        for (int i = 0; i < n; ++i)
          run_rows<LmHeadFormat::q4>(head, in[i], out + i * y_stride, row_begin, row_end);
        break;
    }
  }
}

}  // namespace

void lm_head_matvec_avx512(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                           int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matvec<true>(head, ins, y, y_stride, row_begin, row_end);
}

void lm_head_matvec_avx512_zen4(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                                int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matvec<false>(head, ins, y, y_stride, row_begin, row_end);
}

}  // namespace bitnet
