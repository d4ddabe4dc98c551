#include <string>

#include "bitnet/error.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dependent_launch.cuh"

namespace bitnet::cuda {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(status));
  }
}

bool dependent_launch_supported() {
  static const bool supported = [] {
    int device = 0, major = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
          "compute capability");
    return major >= 9;
  }();
  return supported;
}

}  // namespace bitnet::cuda
