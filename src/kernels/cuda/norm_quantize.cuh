#pragma once
// Device code shared by the standalone rmsnorm_quantize kernel (norm.cu) and the GEMV that
// normalizes and quantizes its own input (ternary_matmul.cu): one way to compute a token's int8
// activations.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {

struct QuantizedRow {
  float scale;  // transformers' s = 127 / max|h|
  int32_t sum;  // sum of the codes
};

// 1 / rms of a row from each thread's part of the sum of squares (double, as the CPU), then f32.
__device__ inline float block_inv_rms(double sum_sq, int64_t cols, float eps) {
  const float variance = static_cast<float>(block_sum(sum_sq) / static_cast<double>(cols));
  return 1.0f / sqrtf(variance + eps);
}

// weight * (x * inv_rms), rounded as the CPU's rmsnorm (no fused multiply-add).
__device__ inline float normed(float x, float weight, float inv) {
  return __fmul_rn(weight, __fmul_rn(x, inv));
}

// The whole block normalizes x[0, cols) with weight (1 / rms from a double sum of squares, then
// f32 as the CPU's rmsnorm) and quantizes it as transformers' ActQuant, handing code i to
// store(i, code). Thread j holds elements j + k * blockDim.x for k < kPerThread, so cols must be
// at most kPerThread * blockDim.x. Every thread gets the scale and the sum.
template <int kPerThread, typename Store>
__device__ QuantizedRow rmsnorm_quantize_row(const float* x, const float* weight, int64_t cols,
                                             float eps, Store&& store) {
  float v[kPerThread], g[kPerThread];
  double sum_sq = 0.0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    v[k] = i < cols ? x[i] : 0.0f;
    g[k] = i < cols ? weight[i] : 0.0f;
    sum_sq += static_cast<double>(v[k]) * static_cast<double>(v[k]);
  }
  const float inv = block_inv_rms(sum_sq, cols, eps);
  float max_abs = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    v[k] = normed(v[k], g[k], inv);
    max_abs = fmaxf(max_abs, fabsf(v[k]));
  }
  const float s = 127.0f / fmaxf(block_max(max_abs), 1e-5f);
  int32_t total = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i < cols) {
      const int8_t c =
          static_cast<int8_t>(fminf(fmaxf(rintf(__fmul_rn(v[k], s)), -128.0f), 127.0f));
      store(i, c);
      total += c;
    }
  }
  return {s, block_sum(total)};
}

}  // namespace bitnet::cuda
