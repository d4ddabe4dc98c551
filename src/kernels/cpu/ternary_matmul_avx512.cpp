// AVX-512 VNNI ternary matmul over row groups (ternary_packing.h).
//
// Every 64-byte vector of a matrix holds dword m of one block for 16 rows, i.e. per plane i the
// codes of weights 64i + 4m .. 64i + 4m + 3 of each row. vpdpbusd against the 4 activations of a
// token broadcast to every lane adds them to 16 rows' dot products at once: the accumulators hold
// one row per lane, so no horizontal reduction is ever needed. The kernels compute sum(code * q)
// with codes unsigned and activations signed, and subtract sum(q).
//
// GEMV (decode, 1-3 tokens; 1-2 on AMD Zen 4): memory bound. t5 needs no digit decoding
// (T5Carry); i2 codes are a shift and masks (I2Gemv). Each group is read front to back, one
// stream, prefetched in software or, on Zen 4 (ternary_matmul_avx512_zen4), left to the hardware
// prefetchers, which do better there (CpuFeatures::amd_zen4).
//
// GEMM (prefill and batched decode, from gemm_min_tokens): compute bound. Up to 12 tokens
// (batched decode) 2-4 groups are streamed together: each vector is decoded one plane at a time and
// multiplied into T accumulators per group, one per token, against broadcast activations, all in
// registers. Beyond 12 tokens a 32-row tile is decoded once into an L2-resident buffer and reused
// for every chunk of 12 tokens.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

// Each kernel prefetches its stream of weights this far ahead, to cover DRAM latency (measured
// from DRAM: a 2560 x 2560 t5 GEMV on 1 thread, 29.7 GB/s without prefetching and 34.6 GB/s at
// 16 KB; the 13824 x 2560 GEMM for 8 tokens on 2 threads, 360-390 GMAC/s without and 440-450
// at 1-16 KB).
constexpr int64_t kPrefetchBytes = 16384;
// The GEMV reads each weight once, so it prefetches non-temporally (into L1, not kept in the
// outer caches) and nearer: t5 GEMVs of the 2B-4T shapes on 2 threads read 10-35% faster than
// with kPrefetchBytes into L1 and L2 in 11 of 12 alternating Google Benchmark runs (1 thread:
// about equal). Those figures are AMD Zen 5's; on Zen 4 the same GEMVs ran faster with no software
// prefetch at all (see CpuFeatures::amd_zen4).
constexpr int64_t kGemvPrefetchBytes = 8192;

// acc + codes . (the 4 activations at q, broadcast), the broadcast embedded in vpdpbusd
// ({1to16}), where it is part of the load. GCC does not fold the broadcast of the intrinsics (the
// GEMVs had one vpbroadcastd per broadcast, shared by T5Carry's two vpdpbusd), and vpbroadcastd
// takes a vector pipe on AMD Zen 4 (about 0.3 cycle beside the multiplies): the t5 GEMV on 1
// thread there, 640 x 2560 and 2560 x 2560 (medians of 5, 2 alternating runs), 20.4-21.1 ->
// 21.9-22.0 GB/s; tg128 on 1 thread, 27.4-28.4 -> 30.1-30.6 tokens/s.
inline __m512i dpbusd_broadcast(__m512i acc, __m512i codes, const int8_t* q) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0"
          : "+v"(acc)
          : "v"(codes), "m"(*reinterpret_cast<const int32_t*>(q)));
  return acc;
}

inline __m512i broadcast_dword(const int8_t* q) {
  int32_t four;
  std::memcpy(&four, q, 4);
  return _mm512_set1_epi32(four);
}

// The lanes of group g whose rows lie in [row_begin, row_end) (none for a group past the end).
inline __mmask16 lane_mask(int64_t g, int64_t row_begin, int64_t row_end) {
  const int64_t r0 = g * kRowGroup;
  const int64_t lo = std::clamp<int64_t>(row_begin - r0, 0, kRowGroup);
  const int64_t hi = std::clamp<int64_t>(row_end - r0, 0, kRowGroup);
  return static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
}

// y[n][16g + lane] for the lanes in `lanes`, from the lanes' sum(code * q) of token n.
inline void store_rows(__m512i code_dot, const TernaryMatrix& w, const QuantizedActs& acts,
                       int64_t n, int64_t g, __mmask16 lanes, float* y, int64_t y_stride) {
  const int64_t r0 = g * kRowGroup;
  const __m512 row_scale = _mm512_maskz_loadu_ps(lanes, w.row_scales.data() + r0);
  const __m512i dot = _mm512_sub_epi32(code_dot, _mm512_set1_epi32(acts.sum[n]));
  // Same expression and rounding as the scalar reference: float(dot) / scale * row_scale.
  const __m512 v = _mm512_mul_ps(
      _mm512_div_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(acts.scale[n])), row_scale);
  _mm512_mask_storeu_ps(y + n * y_stride + r0, lanes, v);
}

// A decoder turns a 64-byte vector into kPlanes vectors of codes, plane by plane: plane(state, i)
// for i = 0, 1, ... in turn, state starting as the vector's bytes. streamed_plane does the same
// with the codes times 2^kStreamedShift where that saves an op, for the streamed GEMM, whose sums
// stay exact up to kStreamedMaxCols columns.

// i2: plane i is bits 2i..2i+1 of every byte.
struct I2Decoder {
  static constexpr int kPlanes = 4;
  static constexpr int64_t kBlock = kI2Block;
  static constexpr int kStreamedShift = 0;
  static constexpr int64_t kStreamedMaxCols = INT64_MAX;
  static __m512i plane(__m512i& bytes, int i) {
    const __m512i mask = _mm512_set1_epi8(3);
    return _mm512_and_si512(i == 0 ? bytes : _mm512_srli_epi16(bytes, 2 * i), mask);
  }
  static __m512i streamed_plane(__m512i& bytes, int i) { return plane(bytes, i); }
};

// t5 digit i of byte p is (3 * x_i) >> 8 with x_0 = p, x_{i+1} = (3 * x_i) mod 256, taken with
// byte averages (t5_digit_by_averages in ternary_layout_t5.h): averages, subtracts, adds, a shift
// and a mask, which AMD Zen 4 issues beside vpdpbusd. Unsigned compares into mask registers, the
// obvious decode, share vpdpbusd's port there: 13824 x 2560 for 8 tokens on 1 thread ran at 166
// GMAC/s with them and at 228 (the port's peak is about 230) with this.
struct T5Decoder {
  static constexpr int kPlanes = kT5Planes;
  static constexpr int64_t kBlock = kT5Block;
  // 64 x the digit is floor(3x/4) & 0xC0, one op fewer: 13824 x 2560 for 4 tokens on 1 thread
  // (ternary_gemm_batch4), 160-165 -> 181-183 GMAC/s. Sums of 64 x 2 x 128 per column.
  static constexpr int kStreamedShift = 6;
  static constexpr int64_t kStreamedMaxCols = (int64_t{1} << 31) / (64 * 2 * 128) - 1;
  static __m512i three_quarters(__m512i& x, int i) {  // floor(3x/4), at most 191; x moves on
    const __m512i zero = _mm512_setzero_si512();
    const __m512i quarter_up = _mm512_avg_epu8(_mm512_avg_epu8(x, zero), zero);
    const __m512i result = _mm512_sub_epi8(x, quarter_up);
    if (i + 1 < kPlanes) x = _mm512_add_epi8(_mm512_add_epi8(x, x), x);
    return result;
  }
  static __m512i plane(__m512i& x, int i) {
    return _mm512_and_si512(_mm512_srli_epi16(three_quarters(x, i), 6), _mm512_set1_epi8(3));
  }
  static __m512i streamed_plane(__m512i& x, int i) {
    return _mm512_and_si512(three_quarters(x, i), _mm512_set1_epi8(static_cast<char>(0xC0)));
  }
};

template <class D>
[[gnu::always_inline]] inline void decode(__m512i bytes, __m512i codes[D::kPlanes]) {
#pragma GCC unroll 16
  for (int i = 0; i < D::kPlanes; ++i) codes[i] = D::plane(bytes, i);
}

// t5 GEMV without decoding digits. With x_0 = p and x_{i+1} = 3 x_i mod 256 (two byte adds),
// digit i is d_i = (3 x_i - x_{i+1}) / 256 exactly, so
//   sum_i q_i . d_i = (3 * sum_i q_i . x_i - sum_i q_i . x_{i+1}) / 256
// costs two vpdpbusd and two vpaddb per plane instead of a decode. Each lane's sums are taken mod
// 2^32; the result is exact while 256 * sum_k q_k d_k fits in int32, which kMaxCols guarantees
// (|q| <= 128, d <= 2).
//
// The last kDecoded planes are decoded instead (T5Decoder::streamed_plane, 64 x the digit), into
// a third sum c that adds 4c = 256 * their part: one vpdpbusd per token and four byte ops. With
// several tokens that balances the ports where vpdpbusd has half of them (Zen 4): 2 tokens
// decoding planes 3 and 4 take 16 ops per vector on the vpdpbusd port and 32 in all, against 20
// and 30; 2 sequences of the whole model on 2 threads, 62.5-64.1 -> 70.1-70.4 tokens/s (2 pairs).
// For 3 tokens on Zen 4 it tied with the GEMM.
template <int kDecoded = 0>
struct T5Carry {
  static constexpr int64_t kBlock = kT5Block;
  static constexpr int64_t kMaxCols = (int64_t{1} << 31) / (256 * 2 * 128) - 1;
  static constexpr int kSums = kDecoded > 0 ? 3 : 2;
  template <int NT>
  static void accumulate(__m512i bytes, const int8_t* q, int64_t q_stride, __m512i acc[NT][kSums]) {
    __m512i x = bytes;
#pragma GCC unroll 16
    for (int i = 0; i < kT5Planes; ++i) {
      if (i >= kT5Planes - kDecoded) {
        const __m512i codes = T5Decoder::streamed_plane(x, i);
#pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) {
          acc[n][kSums - 1] = dpbusd_broadcast(acc[n][kSums - 1], codes, q + n * q_stride + 64 * i);
        }
        continue;
      }
      const __m512i next = _mm512_add_epi8(_mm512_add_epi8(x, x), x);
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        const int8_t* qn = q + n * q_stride + 64 * i;
        acc[n][0] = dpbusd_broadcast(acc[n][0], x, qn);
        acc[n][1] = dpbusd_broadcast(acc[n][1], next, qn);
      }
      x = next;
    }
  }
  static __m512i finish(const __m512i sums[kSums]) {
    const __m512i a = sums[0], b = sums[1];
    __m512i scaled = _mm512_sub_epi32(_mm512_add_epi32(_mm512_add_epi32(a, a), a), b);
    if constexpr (kDecoded > 0) scaled = _mm512_add_epi32(scaled, _mm512_slli_epi32(sums[2], 2));
    return _mm512_srai_epi32(scaled, 8);
  }
};

// i2 GEMV with one shift per vector: planes 0 and 2 are the low two bits of the bytes and of the
// bytes shifted right by 4, planes 1 and 3 the next two bits, left in place (4 x the code). The
// first accumulator sums planes 0 and 2, the second 4 x planes 1 and 3, so the result is
// a + b / 4 (b is a multiple of 4). Against a shift and a mask per plane, on 1 thread in cache
// (AMD Zen 4, 2560 columns): 31 -> 49 GB/s, most of it from loading the vector once (below).
struct I2Gemv {
  static constexpr int64_t kBlock = kI2Block;
  static constexpr int64_t kMaxCols = (int64_t{1} << 31) / (4 * 2 * 128) - 1;
  static constexpr int kSums = 2;
  template <int NT>
  static void accumulate(__m512i bytes, const int8_t* q, int64_t q_stride, __m512i acc[NT][kSums]) {
    const __m512i low = _mm512_set1_epi8(3), high = _mm512_set1_epi8(12);
    // One load: otherwise GCC folds the load into three of the five ops, and Zen 4's load ports
    // (one 64-byte load per cycle) become the limit.
    __asm__("" : "+v"(bytes));
    const __m512i shifted = _mm512_srli_epi16(bytes, 4);
    const __m512i codes[4] = {_mm512_and_si512(bytes, low), _mm512_and_si512(bytes, high),
                              _mm512_and_si512(shifted, low), _mm512_and_si512(shifted, high)};
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) {
        acc[n][i % 2] = dpbusd_broadcast(acc[n][i % 2], codes[i], q + n * q_stride + 64 * i);
      }
    }
  }
  static __m512i finish(const __m512i sums[kSums]) {
    return _mm512_add_epi32(sums[0], _mm512_srai_epi32(sums[1], 2));
  }
};

// One group for NT tokens. The 16 vectors of a block rotate over U accumulator sets, so that
// kSums x NT x U independent vpdpbusd chains (latency 4, two per cycle) keep the ports busy.
template <class G, int NT, int U, bool kPrefetch>
void gemv_group(const TernaryMatrix& w, const QuantizedActs& acts, float* y, int64_t y_stride,
                int64_t g, __mmask16 lanes) {
  const uint8_t* p = w.group(g);
  __m512i acc[U][NT][G::kSums];
#pragma GCC unroll 16
  for (auto& set : acc)
#pragma GCC unroll 16
    for (auto& per_token : set)
#pragma GCC unroll 4
      for (auto& sum : per_token) sum = _mm512_setzero_si512();
  const int64_t blocks = w.blocks();
  for (int64_t b = 0; b < blocks; ++b, p += kRowGroup * 64) {
    const int8_t* q = acts.q.data() + b * G::kBlock;
#pragma GCC unroll 16
    for (int m = 0; m < 16; ++m) {
      if constexpr (kPrefetch)
        _mm_prefetch(reinterpret_cast<const char*>(p + 64 * m + kGemvPrefetchBytes), _MM_HINT_NTA);
      G::template accumulate<NT>(_mm512_loadu_si512(p + 64 * m), q + 4 * m, acts.stride,
                                 acc[m % U]);
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NT; ++n) {
    __m512i sums[G::kSums];
#pragma GCC unroll 4
    for (int s = 0; s < G::kSums; ++s) {
      sums[s] = acc[0][n][s];
#pragma GCC unroll 16
      for (int u = 1; u < U; ++u) sums[s] = _mm512_add_epi32(sums[s], acc[u][n][s]);
    }
    store_rows(G::finish(sums), w, acts, n, g, lanes, y, y_stride);
  }
}

template <class G, int NT, bool kPrefetch>
void gemv(const TernaryMatrix& w, const QuantizedActs& acts, float* y, int64_t y_stride,
          int64_t row_begin, int64_t row_end) {
  constexpr int U = NT == 1 ? 4 : 2;
  for (int64_t g = row_begin / kRowGroup; g * kRowGroup < row_end; ++g)
    gemv_group<G, NT, U, kPrefetch>(w, acts, y, y_stride, g, lane_mask(g, row_begin, row_end));
}

constexpr int kTileGroups = 2;      // groups of a decoded GEMM tile: 32 rows
constexpr int kMaxTileTokens = 12;  // 2 x 12 accumulators + decoded codes + 1 broadcast

// acc[gg][t] += codes[gg] x the broadcast activations of token n0 + t at k = 4 * step.
template <int T, int NG>
[[gnu::always_inline]] inline void multiply_codes(const __m512i codes[NG], const int8_t* q,
                                                  int64_t q_stride, __m512i acc[NG][T]) {
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    const __m512i qv = broadcast_dword(q + t * q_stride);
#pragma GCC unroll 16
    for (int gg = 0; gg < NG; ++gg) acc[gg][t] = _mm512_dpbusd_epi32(acc[gg][t], codes[gg], qv);
  }
}

// Stores the accumulators of groups g0 .. g0 + NG for tokens n0 .. n0 + T. A copy of the
// accumulators goes to this separate function: inlined, its register needs made GCC spill the
// accumulators inside the multiply loop.
template <int T, int NG>
struct TileSums {
  __m512i acc[NG][T];
};

template <int T, int NG>
[[gnu::noinline]] void store_tile(const TileSums<T, NG>& sums, const TernaryMatrix& w,
                                  const QuantizedActs& acts, int64_t n0, int64_t g0,
                                  int64_t row_begin, int64_t row_end, float* y, int64_t y_stride) {
  for (int gg = 0; gg < NG; ++gg) {
    const __mmask16 lanes = lane_mask(g0 + gg, row_begin, row_end);
    for (int t = 0; t < T; ++t)
      store_rows(sums.acc[gg][t], w, acts, n0 + t, g0 + gg, lanes, y, y_stride);
  }
}

template <int T, int NG>
[[gnu::always_inline]] inline void store_accumulators(__m512i acc[NG][T], const TernaryMatrix& w,
                                                      const QuantizedActs& acts, int64_t n0,
                                                      int64_t g0, int64_t row_begin,
                                                      int64_t row_end, float* y, int64_t y_stride) {
  TileSums<T, NG> sums;
#pragma GCC unroll 16
  for (int gg = 0; gg < NG; ++gg)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) sums.acc[gg][t] = acc[gg][t];
  store_tile<T, NG>(sums, w, acts, n0, g0, row_begin, row_end, y, y_stride);
}

// Groups g0 .. g0 + NG for T <= kMaxTileTokens tokens (batched decode): each vector is decoded
// plane by plane and consumed at once, the accumulators stay in registers across the whole row.
template <class D, int T, int NG>
void gemm_streamed_groups(const TernaryMatrix& w, const QuantizedActs& acts, float* y,
                          int64_t y_stride, int64_t g0, int64_t row_begin, int64_t row_end) {
  __m512i acc[NG][T];
#pragma GCC unroll 16
  for (auto& per_group : acc)
#pragma GCC unroll 16
    for (auto& a : per_group) a = _mm512_setzero_si512();
  const int64_t blocks = w.blocks();
  // Each group is its own stream: prefetch within it, or, for groups shorter than the distance,
  // at the same place in the next call's groups (a fixed distance would land in a group another
  // stream is reading). 4 groups of 2560 columns, 4 tokens, from DRAM on 1 thread: +9%.
  const int64_t ahead = w.group_bytes() >= kPrefetchBytes ? kPrefetchBytes : NG * w.group_bytes();
  for (int64_t b = 0; b < blocks; ++b) {
    const int8_t* q = acts.q.data() + b * D::kBlock;
    for (int m = 0; m < 16; ++m) {
      __m512i state[NG];
#pragma GCC unroll 16
      for (int gg = 0; gg < NG; ++gg) {
        const uint8_t* v = w.group(g0 + gg) + (b * kRowGroup + m) * 64;
        _mm_prefetch(reinterpret_cast<const char*>(v + ahead), _MM_HINT_T0);
        state[gg] = _mm512_loadu_si512(v);
      }
#pragma GCC unroll 16
      for (int i = 0; i < D::kPlanes; ++i) {
        __m512i plane[NG];
#pragma GCC unroll 16
        for (int gg = 0; gg < NG; ++gg) plane[gg] = D::streamed_plane(state[gg], i);
        multiply_codes<T, NG>(plane, q + 64 * i + 4 * m, acts.stride, acc);
      }
    }
  }
  if constexpr (D::kStreamedShift > 0) {
#pragma GCC unroll 16
    for (auto& per_group : acc)
#pragma GCC unroll 16
      for (auto& a : per_group) a = _mm512_srai_epi32(a, D::kStreamedShift);  // exact multiples
  }
  store_accumulators<T, NG>(acc, w, acts, 0, g0, row_begin, row_end, y, y_stride);
}

// Decodes groups g0 .. g0 + n_groups (n_groups <= kTileGroups) into tile[k/4][kTileGroups][64]:
// step s = k/4 holds the codes of weights 4s .. 4s + 3 of each group's 16 rows. A missing group
// decodes as zero codes.
template <class D>
void decode_tile(const TernaryMatrix& w, int64_t g0, int64_t n_groups, uint8_t* tile) {
  const int64_t blocks = w.blocks();
  for (int gg = 0; gg < kTileGroups; ++gg) {
    for (int64_t b = 0; b < blocks; ++b) {
      for (int m = 0; m < 16; ++m) {
        __m512i codes[D::kPlanes];
        if (gg < n_groups) {
          const uint8_t* v = w.group(g0 + gg) + (b * kRowGroup + m) * 64;
          _mm_prefetch(reinterpret_cast<const char*>(v + kPrefetchBytes), _MM_HINT_T0);
          decode<D>(_mm512_loadu_si512(v), codes);
        } else {
          for (auto& c : codes) c = _mm512_setzero_si512();
        }
#pragma GCC unroll 16
        for (int i = 0; i < D::kPlanes; ++i) {
          const int64_t step = b * (D::kBlock / 4) + 16 * i + m;
          _mm512_store_si512(tile + (step * kTileGroups + gg) * 64, codes[i]);
        }
      }
    }
  }
}

// Prefill chunk of T tokens from n0 against a decoded tile.
template <int T>
void gemm_tile_tokens(const uint8_t* tile, int64_t steps, const TernaryMatrix& w,
                      const QuantizedActs& acts, int64_t n0, int64_t g0, int64_t row_begin,
                      int64_t row_end, float* y, int64_t y_stride) {
  __m512i acc[kTileGroups][T];
#pragma GCC unroll 16
  for (auto& per_group : acc)
#pragma GCC unroll 16
    for (auto& a : per_group) a = _mm512_setzero_si512();
  const int8_t* q = acts.q.data() + n0 * acts.stride;
  for (int64_t s = 0; s < steps; ++s) {
    __m512i codes[kTileGroups];
#pragma GCC unroll 16
    for (int gg = 0; gg < kTileGroups; ++gg)
      codes[gg] = _mm512_load_si512(tile + (s * kTileGroups + gg) * 64);
    multiply_codes<T, kTileGroups>(codes, q + 4 * s, acts.stride, acc);
  }
  store_accumulators<T, kTileGroups>(acc, w, acts, n0, g0, row_begin, row_end, y, y_stride);
}

// Groups the streamed GEMM decodes together for T tokens: enough independent accumulator chains
// (groups x tokens, 12-24) to keep vpdpbusd busy, and each broadcast activation shared by that
// many groups. 13824 x 2560 on 1 thread, in cache, against the GEMV (carry sums) for 4 tokens and
// 2 groups for 5: 4 tokens +43% (i2 +62%), 5 tokens +6%.
constexpr int streamed_groups(int tokens) {
  return tokens <= 4 ? 4 : tokens == 5 ? 3 : kTileGroups;
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
  const int64_t g_begin = row_begin / kRowGroup;
  const int64_t g_end = (row_end + kRowGroup - 1) / kRowGroup;
  if (n_tokens <= kMaxTileTokens && w.cols <= D::kStreamedMaxCols) {
    with_token_count(n_tokens, [&]<int T>() {
      constexpr int NG = streamed_groups(T);
      int64_t g = g_begin;
      for (; g + NG <= g_end; g += NG)
        gemm_streamed_groups<D, T, NG>(w, acts, y, y_stride, g, row_begin, row_end);
      for (; g < g_end; ++g)
        gemm_streamed_groups<D, T, 1>(w, acts, y, y_stride, g, row_begin, row_end);
    });
    return;
  }
  const int64_t steps = w.blocks() * D::kBlock / 4;
  uint8_t* tile = ternary_tile_buffer(steps * kTileGroups * 64);
  for (int64_t g = g_begin; g < g_end; g += kTileGroups) {
    decode_tile<D>(w, g, std::min<int64_t>(kTileGroups, g_end - g), tile);
    // Chunks of even size keep enough accumulator chains to fill the multiply ports: 13 tokens
    // as 7 + 6, not 12 + 1. 2560 x 2560 on 1 thread, in cache, medians of 6 alternating runs:
    // 13 tokens 319 -> 271 us, 25 tokens 488 -> 443 us, 128 tokens about equal.
    const int64_t chunks = (n_tokens + kMaxTileTokens - 1) / kMaxTileTokens;
    for (int64_t c = 0, n0 = 0; c < chunks; ++c) {
      const int64_t t_count = n_tokens / chunks + (c < n_tokens % chunks ? 1 : 0);
      with_token_count(t_count, [&]<int T>() {
        gemm_tile_tokens<T>(tile, steps, w, acts, n0, g, row_begin, row_end, y, y_stride);
      });
      n0 += t_count;
    }
  }
}

// From this many tokens on, the kernels switch from the streaming GEMV to the GEMM. The t5 GEMV's
// carry sums cost two vpdpbusd per plane and token, the GEMM's decoded digits one plus byte ops,
// while the GEMV reads memory as one non-temporal stream. Whole-model batched decode on 2 threads,
// alternating runs of each split. Zen 5, with an earlier digit decode: 4 sequences a median 6.7%
// faster with the GEMM (8 pairs, 7 faster), 3 sequences 9.4% slower. Zen 4, whose vpdpbusd runs
// at half the rate: 3 sequences of t5 77 -> 88 tokens/s (3 pairs), of i2 110-113 -> 117 (2 pairs);
// 2 sequences of t5 70 -> 64.
constexpr int64_t gemm_min_tokens(bool zen4) {
  return zen4 ? 3 : 4;
}

// G: the GEMV policy (G2 for 2 tokens); D: the decoder that feeds the GEMM.
template <class G, class G2, class D, bool kZen4>
void matmul(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens, float* y,
            int64_t y_stride, int64_t row_begin, int64_t row_end) {
  static_assert(gemm_min_tokens(kZen4) <= 4, "GEMV shapes below cover 1 to 3 tokens");
  static_assert(G::kMaxCols == G2::kMaxCols, "one column limit for the GEMVs");
  constexpr bool kPrefetch = !kZen4;
  if (row_begin >= row_end) return;
  if (n_tokens >= gemm_min_tokens(kZen4) || w.cols > G::kMaxCols) {
    gemm<D>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 3) {
    gemv<G, 3, kPrefetch>(w, acts, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 2) {
    gemv<G2, 2, kPrefetch>(w, acts, y, y_stride, row_begin, row_end);
  } else if (n_tokens == 1) {
    gemv<G, 1, kPrefetch>(w, acts, y, y_stride, row_begin, row_end);
  }
}

}  // namespace

// quantize_activation_row for AVX-512: the generic loop's arithmetic (the same scale expression,
// x * s rounded half to even, clamped) 16 floats at a time.
void quantize_activation_row_avx512(const float* x, int64_t cols, int8_t* q, float& scale,
                                    int32_t& sum) {
  auto lanes_from = [cols](int64_t k) {  // the columns k .. k + 15 that exist
    return cols - k >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - k)) - 1);
  };
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i max_bits = _mm512_setzero_si512();
  for (int64_t k = 0; k < cols; k += 16) {
    const __mmask16 m = lanes_from(k);
    max_bits =
        _mm512_max_epu32(max_bits, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + k), abs_mask));
  }
  const float s = activation_scale(_mm512_reduce_max_epu32(max_bits));
  const __m512 sv = _mm512_set1_ps(s);
  const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
  __m512i total = _mm512_setzero_si512();
  for (int64_t k = 0; k < cols; k += 16) {
    const __mmask16 m = lanes_from(k);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k), sv);
    const __m512i r = _mm512_min_epi32(
        _mm512_max_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                         lo),
        hi);
    _mm512_mask_cvtepi32_storeu_epi8(q + k, m, r);
    total = _mm512_mask_add_epi32(total, m, total, r);  // 0 * a NaN scale is not 0
  }
  scale = s;
  sum = _mm512_reduce_add_epi32(total);
}

template <bool kZen4>
void matmul_any_format(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                       float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (w.format == TernaryFormat::t5) {
    using TwoTokens = T5Carry<kZen4 ? 2 : 0>;
    matmul<T5Carry<>, TwoTokens, T5Decoder, kZen4>(w, acts, n_tokens, y, y_stride, row_begin,
                                                   row_end);
  } else {
    matmul<I2Gemv, I2Gemv, I2Decoder, kZen4>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
  }
}

void ternary_matmul_avx512(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matmul_any_format<false>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
}

void ternary_matmul_avx512_zen4(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                                float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matmul_any_format<true>(w, acts, n_tokens, y, y_stride, row_begin, row_end);
}

}  // namespace bitnet
