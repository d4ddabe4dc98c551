#pragma once
// Warp and block reductions for kernels launched with a multiple of 32 threads (up to 1024).

#include <cuda_runtime.h>

namespace bitnet::cuda {

template <typename T>
__device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Every thread of the block gets the result. Contains __syncthreads().
template <typename T, typename Op>
__device__ T block_reduce(T v, Op warp_op, T identity) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n_warps = (blockDim.x + 31) / 32;
  v = warp_op(v);
  __syncthreads();  // partial may still be read by a previous reduction
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < n_warps ? partial[lane] : identity;
  return warp_op(v);
}

template <typename T>
__device__ T block_sum(T v) {
  return block_reduce(
      v, [](T x) { return warp_sum(x); }, T(0));
}

__device__ inline float block_max(float v) {
  return block_reduce(
      v, [](float x) { return warp_max(x); }, -INFINITY);
}

}  // namespace bitnet::cuda
