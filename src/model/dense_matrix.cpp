#include <algorithm>
#include <cstring>

#include "base/float16.h"
#include "base/mapped_file.h"
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
  if (release_rows_after_read) {
    // The 2 MiB window around the row (the largest folio the kernel maps), within this matrix.
    constexpr uintptr_t kWindow = uintptr_t{2} << 20;
    const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(dtype);
    const auto* base = static_cast<const uint8_t*>(data);
    const uintptr_t lo =
        std::max(reinterpret_cast<uintptr_t>(base),
                 reinterpret_cast<uintptr_t>(base + r * row_bytes) / kWindow * kWindow);
    const uintptr_t hi =
        std::min(reinterpret_cast<uintptr_t>(base + rows * row_bytes),
                 (reinterpret_cast<uintptr_t>(base + (r + 1) * row_bytes) + kWindow - 1) / kWindow *
                     kWindow);
    release_pages({reinterpret_cast<const uint8_t*>(lo), hi - lo});
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
