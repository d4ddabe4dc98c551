#include <cstring>

#include "base/float16.h"
#include "kernels/cpu/ops.h"
#include "model/weights.h"

namespace bitnet {

void DenseMatrix::row_to_f32(int64_t r, float* out) const {
  if (dtype == DType::BF16) {
    const uint16_t* row = static_cast<const uint16_t*>(data) + r * cols;
    for (int64_t k = 0; k < cols; ++k) out[k] = bf16_to_f32(row[k]);
  } else {
    std::memcpy(out, static_cast<const float*>(data) + r * cols, static_cast<size_t>(cols) * 4);
  }
}

void DenseMatrix::matvec(const float* x, float* y, int64_t row_begin, int64_t row_end) const {
  if (dtype == DType::BF16) {
    matvec_bf16(static_cast<const uint16_t*>(data), cols, x, y, row_begin, row_end);
    return;
  }
  const float* w = static_cast<const float*>(data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    float acc = 0.0f;
    for (int64_t k = 0; k < cols; ++k) acc += w[r * cols + k] * x[k];
    y[r] = acc;
  }
}

}  // namespace bitnet
