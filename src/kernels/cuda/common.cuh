#pragma once
// Shared by the CUDA kernels and the forward pass: error checking and small device helpers.

#include <cuda_runtime.h>

#include <cstdint>

namespace bitnet::cuda {

// Throws bitnet::Error with `what` and CUDA's message unless status is cudaSuccess.
void check(cudaError_t status, const char* what);
// After a launch: reports a bad configuration or an earlier asynchronous fault.
inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel);
}

// Views of device buffers that the launchers take.
struct Int8Acts {                // per-token int8 activations, as the CPU's QuantizedActs
  const int8_t* q = nullptr;     // [n][stride], zero past the row's columns
  int64_t stride = 0;            // >= padded_k(cols) (ternary_layout.h), a multiple of 16
  const float* scale = nullptr;  // [n]
  const int32_t* sum = nullptr;  // [n]
};

}  // namespace bitnet::cuda
