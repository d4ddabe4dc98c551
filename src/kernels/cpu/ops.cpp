#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>

#include "base/cpu_features.h"
#include "base/float16.h"

namespace bitnet {

BITNET_CLONE_PER_ISA void rmsnorm(const float* x, const float* weight, float* out, int64_t n,
                                  float eps) {
  // Eight running sums, element i in sum i % 8, added in a fixed order at the end: one serial sum
  // waited on each add's latency. The order is the same in every ISA's clone.
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  const int64_t full = n / kLanes * kLanes;
  for (int64_t i = 0; i < full; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (int64_t i = full; i < n; ++i) lane[i - full] += static_cast<double>(x[i]) * x[i];
  double sum_sq = 0.0;
  for (double v : lane) sum_sq += v;
  const float variance = static_cast<float>(sum_sq / static_cast<double>(n));
  const float inv_rms = 1.0f / std::sqrt(variance + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv_rms);
}

void rope(float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void rope_tables(float theta, int head_dim, int context, std::vector<float>& cos,
                 std::vector<float>& sin) {
  const int half = head_dim / 2;
  cos.resize(static_cast<size_t>(context) * half);
  sin.resize(cos.size());
  for (int i = 0; i < half; ++i) {
    const float inv_freq =
        1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    for (int pos = 0; pos < context; ++pos) {
      const float angle = static_cast<float>(pos) * inv_freq;
      cos[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

BITNET_CLONE_PER_ISA void relu2_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = std::max(gate[i], 0.0f);
    out[i] = g * g * up[i];
  }
}

void f32_to_f16_row_avx2(const float* x, uint16_t* out, int64_t n);  // ops_avx2.cpp

void f32_to_f16_row(const float* x, uint16_t* out, int64_t n) {
  static const bool f16c = CpuFeatures::host().avx2;
  if (f16c) {
    f32_to_f16_row_avx2(x, out, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

void matvec_bf16(const uint16_t* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                 int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint16_t* row = w + r * cols;
    float acc[8] = {};
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8)
      for (int j = 0; j < 8; ++j) acc[j] += bf16_to_f32(row[k + j]) * x[k + j];
    for (; k < cols; ++k) acc[0] += bf16_to_f32(row[k]) * x[k];
    y[r] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
}

}  // namespace bitnet
