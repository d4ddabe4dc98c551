#pragma once
// Programmatic dependent launch (sm_90): a kernel launched with launch_dependent() may start
// while the kernel before it is still running, once that kernel has called allow_dependents();
// it does work that needs nothing from its predecessor (the GEMV's weight loads), then calls
// wait_for_predecessor() before touching any buffer the predecessor writes or reads. On older
// GPUs all three fall back to ordinary stream order.

#include <cuda_runtime.h>

#include "kernels/cuda/common.cuh"

namespace bitnet::cuda {

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ void wait_for_predecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

bool dependent_launch_supported();  // the current device is sm_90 or newer

template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = dependent_launch_supported() ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, args...), "cudaLaunchKernelEx");
}

}  // namespace bitnet::cuda
