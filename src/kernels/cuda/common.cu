#include <string>

#include "bitnet/error.h"
#include "kernels/cuda/common.cuh"

namespace bitnet::cuda {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(status));
  }
}

}  // namespace bitnet::cuda
