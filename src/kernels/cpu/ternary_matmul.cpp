#include "kernels/cpu/ternary_matmul.h"

#include <algorithm>
#include <cmath>

#include "base/thread_pool.h"

namespace bitnet {

void QuantizedActs::resize(int64_t n_tokens, int64_t n_cols) {
  cols = n_cols;
  stride = padded_cols(n_cols);
  q.assign(static_cast<size_t>(n_tokens * stride), 0);
  scale.assign(static_cast<size_t>(n_tokens), 0.0f);
  sum.assign(static_cast<size_t>(n_tokens), 0);
}

void quantize_activations(const float* x, int64_t x_stride, int64_t n_tokens, int64_t cols,
                          QuantizedActs& out) {
  if (out.cols != cols || static_cast<int64_t>(out.scale.size()) < n_tokens)
    out.resize(n_tokens, cols);
  for (int64_t n = 0; n < n_tokens; ++n) {
    const float* xn = x + n * x_stride;
    float max_abs = 0.0f;
    for (int64_t k = 0; k < cols; ++k) max_abs = std::max(max_abs, std::fabs(xn[k]));
    const float s = 127.0f / std::max(max_abs, 1e-5f);
    int8_t* qn = out.q.data() + n * out.stride;
    int32_t sum = 0;
    for (int64_t k = 0; k < cols; ++k) {
      // nearbyint rounds half to even in the default rounding mode, as torch.round does.
      float v = std::nearbyint(xn[k] * s);
      v = std::clamp(v, -128.0f, 127.0f);
      qn[k] = static_cast<int8_t>(v);
      sum += qn[k];
    }
    out.scale[n] = s;
    out.sum[n] = sum;
  }
}

void ternary_matmul_scalar(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = acts.stride / kTernaryBlock;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.row(r);
    for (int64_t n = 0; n < n_tokens; ++n) {
      const int8_t* q = acts.q.data() + n * acts.stride;
      int32_t acc = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* bytes = row + b * kTernaryBlockBytes;
        const int8_t* qb = q + b * kTernaryBlock;
        for (int i = 0; i < 4; ++i) {
          for (int j = 0; j < 64; ++j) acc += (((bytes[j] >> (2 * i)) & 3) - 1) * qb[64 * i + j];
        }
      }
      y[n * y_stride + r] = static_cast<float>(acc) / acts.scale[n] * w.row_scales[r];
    }
  }
}

// Defined in ternary_matmul_avx2.cpp / ternary_matmul_avx512.cpp.
void ternary_matmul_avx2(const TernaryMatrix&, const QuantizedActs&, int64_t, float*, int64_t,
                         int64_t, int64_t);
void ternary_matmul_avx512(const TernaryMatrix&, const QuantizedActs&, int64_t, float*, int64_t,
                           int64_t, int64_t);

TernaryMatmulFn ternary_matmul_kernel(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512_vnni:
      return ternary_matmul_avx512;
    case CpuIsa::avx2:
      return ternary_matmul_avx2;
    case CpuIsa::scalar:
      break;
  }
  return ternary_matmul_scalar;
}

void ternary_matmul(ThreadPool& pool, CpuIsa isa, const TernaryMatrix& w, const QuantizedActs& acts,
                    int64_t n_tokens, float* y, int64_t y_stride) {
  TernaryMatmulFn kernel = ternary_matmul_kernel(isa);
  // 16-row grains keep each thread's rows contiguous and its stores on whole cache lines.
  pool.parallel_for(w.rows, 16, [&](int64_t begin, int64_t end) {
    kernel(w, acts, n_tokens, y, y_stride, begin, end);
  });
}

}  // namespace bitnet
