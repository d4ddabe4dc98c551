#pragma once
// int8 activations x ternary weights, exact int32 accumulation:
//   y[n][r] = (sum_k q[n][k] * t[r][k]) / act_scale[n] * row_scale[r]

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "base/cpu_features.h"
#include "kernels/cpu/ternary_packing.h"

namespace bitnet {

class ThreadPool;

// Per-token int8 activations, as transformers' ActQuant:
//   s = 127 / max(max|x|, 1e-5);  q = clamp(round_half_even(x * s), -128, 127)
struct QuantizedActs {
  int64_t cols = 0;
  int64_t stride = 0;        // activation_stride(cols): whole blocks of any format; padding is 0
  std::vector<int8_t> q;     // [n][stride]
  std::vector<float> scale;  // [n] s per token
  std::vector<int32_t> sum;  // [n] sum of q per token (the kernels' code offset)

  void resize(int64_t n_tokens, int64_t n_cols);
};

// `isa` picks the variant; every variant gives the same bits.
void quantize_activations(const float* x, int64_t x_stride, int64_t n_tokens, int64_t cols,
                          QuantizedActs& out, CpuIsa isa = CpuFeatures::host().best_isa());
// One token's row of an already sized `out` (rows may be quantized concurrently).
void quantize_activation_row(const float* x, int64_t row, QuantizedActs& out,
                             CpuIsa isa = CpuFeatures::host().best_isa());

// s from max|x| given as its float bits (NaN bits give a NaN scale, as in transformers).
inline float activation_scale(uint32_t max_abs_bits) {
  return 127.0f / std::max(std::bit_cast<float>(max_abs_bits), 1e-5f);
}

// Computes rows [row_begin, row_end) of y for n_tokens tokens.
using TernaryMatmulFn = void (*)(const TernaryMatrix& w, const QuantizedActs& acts,
                                 int64_t n_tokens, float* y, int64_t y_stride, int64_t row_begin,
                                 int64_t row_end);

void ternary_matmul_scalar(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end);

// Every implementation; several may serve one CpuIsa (the best available one is used).
enum class TernaryKernel {
  scalar,
  avx2,         // vpmaddubsw + vpmaddwd
  avx_vnni,     // AVX2 with VEX vpdpbusd
  avx512,       // AVX-512 VNNI
  avx512_zen4,  // the same tuned for AMD Zen 4 (CpuFeatures::amd_zen4)
};
inline constexpr TernaryKernel kAllTernaryKernels[] = {
    TernaryKernel::scalar, TernaryKernel::avx2, TernaryKernel::avx_vnni, TernaryKernel::avx512,
    TernaryKernel::avx512_zen4};

const char* kernel_name(TernaryKernel kernel);
bool kernel_available(TernaryKernel kernel);  // on this CPU
TernaryMatmulFn ternary_matmul_kernel(TernaryKernel kernel);
// The fastest implementation of isa available on this CPU (for AVX-512, the one that
// CpuFeatures::amd_zen4 names).
TernaryKernel best_kernel(CpuIsa isa);
TernaryMatmulFn ternary_matmul_kernel(CpuIsa isa);

// A per-thread, cache-line aligned scratch buffer of at least `bytes` (grown as needed), where
// the GEMMs decode a tile of codes once for many tokens.
uint8_t* ternary_tile_buffer(int64_t bytes);

// ternary_matmul splits rows across threads in blocks of 64: whole cache lines of output, whole
// GEMM tiles (32 and 64 rows), and a few microseconds of decode each, so that a thread taking
// another's last blocks evens out the finish. Against fixed halves, the threads' waits at the
// ends of decode's matmuls fell from 8.3% of a token's time to 2.1% (tg128, 2 threads); tokens/s
// rose less (a median 3% over 8 alternating pairs, and 2.9% more once owners took a quarter of
// their run at a time), because a thread left alone reads faster than each of two.
constexpr int64_t kTernaryRowBlock = 64;

// The whole matrix, rows split across the pool's threads.
void ternary_matmul(ThreadPool& pool, CpuIsa isa, const TernaryMatrix& w, const QuantizedActs& acts,
                    int64_t n_tokens, float* y, int64_t y_stride);

}  // namespace bitnet
