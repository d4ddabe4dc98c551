// AVX-512 VNNI ternary matmul.
//
// The t5 GEMV needs no digit decoding (T5CarryGemv); GEMM tiles decode t5 digits with AVX-512BW
// arithmetic, which measured as fast as VBMI vpermi2b lookups there since a tile is decoded
// once per up to 128 tokens.
//
// A "decoder" D turns 64 packed bytes into D::kPlanes vectors of unsigned codes (t + 1): plane
// i's byte j is the code of weight 64i + j of the block (see ternary_layout_*.h). The kernels
// compute sum(code * q) with vpdpbusd (codes unsigned, activations signed) and subtract sum(q).
//
// GEMV (decode, 1-3 tokens): memory bound. Four rows at a time share each activation load and
// give independent accumulation chains; reductions happen once per row, after the block loop.
// (Measured: at 4-6 tokens the GEMM below is as fast or faster.)
//
// GEMM (prefill and batched decode, >= 4 tokens): compute bound. A tile of 32 rows is decoded
// once into an L2-resident buffer laid out [k/4][32 rows][4 codes], i.e. each 64-byte vector
// holds 4 consecutive weights of 16 rows. The micro-kernel broadcasts 4 activations of one token
// and multiplies them into 2 x T accumulators (16 rows x 1 token each), so no horizontal reduction
// is ever needed and each activation dword is loaded once per 32 rows. Up to 12 tokens (batched
// decode) a tile is decoded and consumed one 64-byte block at a time, so it never leaves L1
// (measured 1.3-1.6x faster at 8 tokens for i2; t5 stays bound by its digit arithmetic).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

// The GEMV's rows are adjacent in memory, so prefetching each row this far ahead is a linear
// prefetch of the matrix, far enough ahead to cover DRAM latency at full bandwidth (tuned on
// whole-model decode: 1 KB reaches about half the bandwidth; 16 KB beat 8 KB and 32 KB).
constexpr int64_t kGemvPrefetchBytes = 16384;

inline float* token_row(float* y, int64_t y_stride, int64_t n) {
  return y + n * y_stride;
}

// GEMV policy for any decoder: codes of each plane times that plane's activations, alternating
// between the two accumulators so consecutive vpdpbusd never wait on each other.
template <class D>
struct CodesGemv {
  static constexpr int64_t kBlock = D::kBlock;
  static constexpr int64_t kMaxCols = INT64_MAX;
  template <int NT>
  static void accumulate(__m512i bytes, const int8_t* q, int64_t q_stride, __m512i acc[NT][2]) {
    __m512i codes[D::kPlanes];
    D::decode(bytes, codes);
#pragma GCC unroll 16
    for (int i = 0; i < D::kPlanes; ++i) {
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        const __m512i qv = _mm512_loadu_si512(q + n * q_stride + 64 * i);
        acc[n][i % 2] = _mm512_dpbusd_epi32(acc[n][i % 2], codes[i], qv);
      }
    }
  }
  static int32_t finish(__m512i a, __m512i b) {
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a, b));
  }
};

// t5 GEMV without decoding digits. With x_0 = p and x_{i+1} = 3 x_i mod 256 (two byte adds),
// digit i is d_i = (3 x_i - x_{i+1}) / 256 exactly, so
//   sum_i q_i . d_i = (3 * sum_i q_i . x_i - sum_i q_i . x_{i+1}) / 256
// costs two vpdpbusd and two vpaddb per plane instead of a decode of five or more instructions.
// The sums are taken mod 2^32; the result is exact while 256 * sum_k q_k d_k fits in int32,
// which kMaxCols guarantees (|q| <= 128, d <= 2).
struct T5CarryGemv {
  static constexpr int64_t kBlock = kT5Block;
  static constexpr int64_t kMaxCols = (int64_t{1} << 31) / (256 * 2 * 128) - 1;
  template <int NT>
  static void accumulate(__m512i bytes, const int8_t* q, int64_t q_stride, __m512i acc[NT][2]) {
    __m512i x = bytes;
#pragma GCC unroll 16
    for (int i = 0; i < kT5Planes; ++i) {
      const __m512i next = _mm512_add_epi8(_mm512_add_epi8(x, x), x);
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        const __m512i qv = _mm512_loadu_si512(q + n * q_stride + 64 * i);
        acc[n][0] = _mm512_dpbusd_epi32(acc[n][0], x, qv);
        acc[n][1] = _mm512_dpbusd_epi32(acc[n][1], next, qv);
      }
      x = next;
    }
  }
  static int32_t finish(__m512i a, __m512i b) {
    const __m512i three_a_minus_b =
        _mm512_sub_epi32(_mm512_add_epi32(_mm512_add_epi32(a, a), a), b);
    return _mm512_reduce_add_epi32(three_a_minus_b) >> 8;
  }
};

template <class G, int R, int NT>
void gemv_rows(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n0, float* y,
               int64_t y_stride, int64_t r0) {
  const int64_t row_bytes = w.row_bytes();
  const int64_t blocks = row_bytes / 64;
  const uint8_t* rows = w.row(r0);
  const int8_t* q = acts.q.data() + n0 * acts.stride;
  // R rows x NT tokens x 2: >= 8 independent vpdpbusd chains (latency 5, two per cycle).
  __m512i acc[R][NT][2];
#pragma GCC unroll 16
  for (auto& per_row : acc)
#pragma GCC unroll 16
    for (auto& per_token : per_row) per_token[0] = per_token[1] = _mm512_setzero_si512();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = rows + b * 64;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes + kGemvPrefetchBytes),
                   _MM_HINT_T0);
      G::template accumulate<NT>(_mm512_loadu_si512(block + r * row_bytes), q + b * G::kBlock,
                                 acts.stride, acc[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) {
      const int32_t dot = G::finish(acc[r][n][0], acc[r][n][1]) - acts.sum[n0 + n];
      token_row(y, y_stride, n0 + n)[r0 + r] =
          static_cast<float>(dot) / acts.scale[n0 + n] * w.row_scales[r0 + r];
    }
  }
}

template <class G, int R, int NT>
void gemv(const TernaryMatrix& w, const QuantizedActs& acts, float* y, int64_t y_stride,
          int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) gemv_rows<G, R, NT>(w, acts, 0, y, y_stride, r);
  for (; r < row_end; ++r) gemv_rows<G, 1, NT>(w, acts, 0, y, y_stride, r);
}

constexpr int kTileGroups = 2;  // 16-row groups per GEMM tile
constexpr int kTileRows = 16 * kTileGroups;
constexpr int kMaxTileTokens = 12;  // 2 x 12 accumulators + 2 weight vectors + 1 broadcast

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// A per-thread, cache-line aligned buffer for one decoded tile; grows as needed.
inline uint8_t* tile_buffer(int64_t bytes) {
  thread_local std::unique_ptr<uint8_t, FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (bytes > capacity) {
    buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(bytes))));
    capacity = bytes;
  }
  return buffer.get();
}

// Decodes blocks [b0, b1) of rows [r0, r0 + n_rows) (n_rows <= 32) into tile[k/4][32][4], k
// counted from block b0. Each gather fetches the same packed dword from 16 rows: 4 consecutive
// weights of every plane (ternary_layout_*.h), so decoding it yields D::kPlanes vectors that are
// already in tile order. Missing rows read as 0.
template <class D>
[[gnu::always_inline]] inline void decode_blocks(const TernaryMatrix& w, int64_t r0, int64_t n_rows,
                                                 int64_t b0, int64_t b1, uint8_t* tile) {
  const int64_t row_bytes = w.row_bytes();
  const __m512i row_offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int32_t>(row_bytes)));
  for (int g = 0; g < kTileGroups; ++g) {
    const int64_t rows_here = std::clamp<int64_t>(n_rows - 16 * g, 0, 16);
    const __mmask16 valid = static_cast<__mmask16>((1u << rows_here) - 1);
    const uint8_t* base = w.packed + (r0 + 16 * g) * row_bytes;
    for (int64_t b = b0; b < b1; ++b) {
      for (int m = 0; m < 16; ++m) {
        const __m512i dwords = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid,
                                                           row_offsets, base + b * 64 + 4 * m, 1);
        __m512i codes[D::kPlanes];
        D::decode(dwords, codes);
#pragma GCC unroll 16
        for (int i = 0; i < D::kPlanes; ++i) {
          const int64_t step = (b - b0) * (D::kBlock / 4) + 16 * i + m;
          _mm512_store_si512(tile + (step * kTileGroups + g) * 64, codes[i]);
        }
      }
    }
  }
}

// acc[g][t] += tile steps [0, steps) x the activations of tokens n0 .. n0 + T at k/4 steps
// [s0, s0 + steps).
template <int T>
[[gnu::always_inline]] inline void gemm_accumulate(const uint8_t* tile, int64_t s0, int64_t steps,
                                                   const QuantizedActs& acts, int64_t n0,
                                                   __m512i acc[kTileGroups][T]) {
  const int8_t* q = acts.q.data() + n0 * acts.stride + 4 * s0;
  for (int64_t s = 0; s < steps; ++s) {
    const __m512i w0 = _mm512_load_si512(tile + s * 128);
    const __m512i w1 = _mm512_load_si512(tile + s * 128 + 64);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      int32_t four;
      std::memcpy(&four, q + t * acts.stride + 4 * s, 4);
      const __m512i qv = _mm512_set1_epi32(four);
      acc[0][t] = _mm512_dpbusd_epi32(acc[0][t], w0, qv);
      acc[1][t] = _mm512_dpbusd_epi32(acc[1][t], w1, qv);
    }
  }
}

// y[n0 + t][r0 .. r0 + n_rows) from the accumulators.
template <int T>
[[gnu::always_inline]] inline void gemm_store(__m512i acc[kTileGroups][T], const TernaryMatrix& w,
                                              const QuantizedActs& acts, int64_t n0, int64_t r0,
                                              int64_t n_rows, float* y, int64_t y_stride) {
#pragma GCC unroll 16
  for (int g = 0; g < kTileGroups; ++g) {
    const int64_t rows_here = std::clamp<int64_t>(n_rows - 16 * g, 0, 16);
    if (rows_here == 0) break;
    const __mmask16 valid = static_cast<__mmask16>((1u << rows_here) - 1);
    const __m512 row_scale = _mm512_maskz_loadu_ps(valid, w.row_scales.data() + r0 + 16 * g);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m512i dot = _mm512_sub_epi32(acc[g][t], _mm512_set1_epi32(acts.sum[n0 + t]));
      // Same expression and rounding as the scalar reference: float(dot) / scale * row_scale.
      const __m512 v = _mm512_mul_ps(
          _mm512_div_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(acts.scale[n0 + t])), row_scale);
      _mm512_mask_storeu_ps(token_row(y, y_stride, n0 + t) + r0 + 16 * g, valid, v);
    }
  }
}

// Prefill chunks (more than kMaxTileTokens tokens): the whole tile is decoded once into an
// L2-resident buffer and reused for every chunk of tokens.
template <int T>
void gemm_micro_kernel(const uint8_t* tile, int64_t steps, const TernaryMatrix& w,
                       const QuantizedActs& acts, int64_t n0, int64_t r0, int64_t n_rows, float* y,
                       int64_t y_stride) {
  __m512i acc[kTileGroups][T];
#pragma GCC unroll 16
  for (auto& per_group : acc)
#pragma GCC unroll 16
    for (auto& a : per_group) a = _mm512_setzero_si512();
  gemm_accumulate<T>(tile, 0, steps, acts, n0, acc);
  gemm_store<T>(acc, w, acts, n0, r0, n_rows, y, y_stride);
}

// At most kMaxTileTokens tokens (batched decode): each tile is used by one chunk of tokens only,
// so it is decoded a block at a time into an L1-resident buffer and consumed at once, with the
// accumulators kept in registers across blocks. (A whole decoded tile is larger than L1, and
// writing it out and reading it back cost as much as the multiplies.)
template <class D, int T>
void gemm_streamed(const TernaryMatrix& w, const QuantizedActs& acts, float* y, int64_t y_stride,
                   int64_t row_begin, int64_t row_end) {
  constexpr int64_t kBlockSteps = D::kBlock / 4;
  const int64_t blocks = w.row_bytes() / 64;
  uint8_t* tile = tile_buffer(kBlockSteps * kTileRows * 4);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
    const int64_t n_rows = std::min<int64_t>(kTileRows, row_end - r0);
    __m512i acc[kTileGroups][T];
#pragma GCC unroll 16
    for (auto& per_group : acc)
#pragma GCC unroll 16
      for (auto& a : per_group) a = _mm512_setzero_si512();
    for (int64_t b = 0; b < blocks; ++b) {
      decode_blocks<D>(w, r0, n_rows, b, b + 1, tile);
      gemm_accumulate<T>(tile, b * kBlockSteps, kBlockSteps, acts, 0, acc);
    }
    gemm_store<T>(acc, w, acts, 0, r0, n_rows, y, y_stride);
  }
}

// Calls fn.template operator()<T>() with T = t_count, 1 <= t_count <= kMaxTileTokens.
template <int T = 1, class Fn>
void with_token_count(int64_t t_count, Fn&& fn) {
  if constexpr (T < kMaxTileTokens) {
    if (t_count > T) return with_token_count<T + 1>(t_count, fn);
  }
  fn.template operator()<T>();
}

template <class D>
void gemm(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
          int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (n_tokens <= kMaxTileTokens) {
    with_token_count(
        n_tokens, [&]<int T>() { gemm_streamed<D, T>(w, acts, y, y_stride, row_begin, row_end); });
    return;
  }
  const int64_t blocks = w.row_bytes() / 64;
  const int64_t steps = blocks * D::kBlock / 4;
  uint8_t* tile = tile_buffer(steps * kTileRows * 4);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
    const int64_t n_rows = std::min<int64_t>(kTileRows, row_end - r0);
    decode_blocks<D>(w, r0, n_rows, 0, blocks, tile);
    for (int64_t n0 = 0; n0 < n_tokens; n0 += kMaxTileTokens) {
      const int64_t t_count = std::min<int64_t>(kMaxTileTokens, n_tokens - n0);
      with_token_count(t_count, [&]<int T>() {
        gemm_micro_kernel<T>(tile, steps, w, acts, n0, r0, n_rows, y, y_stride);
      });
    }
  }
}

// G: the GEMV policy; D: the decoder that fills GEMM tiles.
template <class G, class D>
void matmul(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
            int64_t y_stride, int64_t row_begin, int64_t row_end) {
  static_assert(kTernaryGemmMinTokens == 4, "GEMV shapes below cover 1 to 3 tokens");
  if (n_tokens >= kTernaryGemmMinTokens || w.cols > G::kMaxCols) {
    gemm<D>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 3) {
    gemv<G, 4, 3>(w, acts, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 2) {
    gemv<G, 4, 2>(w, acts, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 1) {
    gemv<G, 4, 1>(w, acts, y, y_stride, row_begin, row_end);
  }
}

// i2: plane i is bits 2i..2i+1 of every byte.
struct I2Decoder {
  static constexpr int kPlanes = 4;
  static constexpr int64_t kBlock = kI2Block;
  static void decode(__m512i bytes, __m512i codes[kPlanes]) {
    const __m512i mask = _mm512_set1_epi8(3);
    codes[0] = _mm512_and_si512(bytes, mask);
    codes[1] = _mm512_and_si512(_mm512_srli_epi16(bytes, 2), mask);
    codes[2] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), mask);
    codes[3] = _mm512_and_si512(_mm512_srli_epi16(bytes, 6), mask);
  }
};

// t5 digit i of byte p is (3 * x_i) >> 8 with x_0 = p, x_{i+1} = (3 * x_i) mod 256
// (ternary_layout_t5.h). There is no byte multiply, so vpmaddubsw computes 3 * x of the even and
// of the odd bytes as 16-bit words (at most 765: no saturation), and byte shifts put the digit
// (bits 8-9) and the next x (bits 0-7) back into byte lanes.
struct T5ArithmeticDecoder {
  static constexpr int kPlanes = kT5Planes;
  static constexpr int64_t kBlock = kT5Block;
  static void decode(__m512i bytes, __m512i codes[kPlanes]) {
    const __m512i times3_even = _mm512_set1_epi16(3);
    const __m512i times3_odd = _mm512_set1_epi16(3 << 8);
    const __m512i high_bytes = _mm512_set1_epi16(static_cast<int16_t>(0xFF00));
    __m512i x = bytes;
#pragma GCC unroll 16
    for (int i = 0; i < kPlanes; ++i) {
      const __m512i even = _mm512_maddubs_epi16(x, times3_even);
      const __m512i odd = _mm512_maddubs_epi16(x, times3_odd);
      // codes = (even >> 8) | (odd & 0xFF00)
      codes[i] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(even, 8), odd, high_bytes, 0xF8);
      // x = (even & 0x00FF) | (odd << 8)
      if (i + 1 < kPlanes)
        x = _mm512_ternarylogic_epi32(even, _mm512_slli_epi16(odd, 8), high_bytes, 0xDC);
    }
  }
};

}  // namespace

void ternary_matmul_avx512(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (w.format == TernaryFormat::t5) {
    matmul<T5CarryGemv, T5ArithmeticDecoder>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else {
    matmul<CodesGemv<I2Decoder>, I2Decoder>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  }
}

}  // namespace bitnet
