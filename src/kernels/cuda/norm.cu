#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embed_kernel(const uint16_t* embed, int64_t hidden, const int32_t* tokens,
                             float* x) {
  const uint16_t* row = embed + static_cast<int64_t>(tokens[blockIdx.x]) * hidden;
  float* out = x + blockIdx.x * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[i] = __uint_as_float(static_cast<uint32_t>(row[i]) << 16);
  }
}

// 1 / rms(x) as the CPU computes it: double sum of squares, then f32.
__device__ float inv_rms(const float* x, int64_t cols, float eps) {
  double sum_sq = 0.0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    sum_sq += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  sum_sq = block_sum(sum_sq);
  const float variance = static_cast<float>(sum_sq / static_cast<double>(cols));
  return 1.0f / sqrtf(variance + eps);
}

__device__ float normed(const float* x, const float* weight, int64_t i, float inv) {
  return __fmul_rn(weight[i], __fmul_rn(x[i], inv));
}

__global__ void rmsnorm_quantize_kernel(const float* x, int64_t x_stride, const float* weight,
                                        int64_t cols, float eps, int8_t* q, int64_t q_stride,
                                        float* scale, int32_t* sum) {
  const int t = blockIdx.x;
  x += t * x_stride;
  q += t * q_stride;
  const float inv = inv_rms(x, cols, eps);
  float max_abs = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    max_abs = fmaxf(max_abs, fabsf(normed(x, weight, i, inv)));
  }
  max_abs = block_max(max_abs);
  const float s = 127.0f / fmaxf(max_abs, 1e-5f);
  int32_t total = 0;
  for (int64_t i = threadIdx.x; i < q_stride; i += blockDim.x) {
    int8_t v = 0;
    if (i < cols) v = static_cast<int8_t>(fminf(fmaxf(rintf(__fmul_rn(normed(x, weight, i, inv), s)), -128.0f), 127.0f));
    q[i] = v;
    total += v;
  }
  total = block_sum(total);
  if (threadIdx.x == 0) {
    scale[t] = s;
    sum[t] = total;
  }
}

__global__ void rmsnorm_kernel(const float* x, int64_t cols, const float* weight, float eps,
                               float* out, int64_t out_stride) {
  x += blockIdx.x * cols;
  out += blockIdx.x * out_stride;
  const float inv = inv_rms(x, cols, eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[i] = normed(x, weight, i, inv);
}

}  // namespace

void embed_rows(const uint16_t* embed, int64_t hidden, const int32_t* tokens, int n_tokens,
                float* x, cudaStream_t stream) {
  embed_kernel<<<n_tokens, kThreads, 0, stream>>>(embed, hidden, tokens, x);
  check_launch("embed_rows");
}

void rmsnorm_quantize(const float* x, int64_t x_stride, const float* weight, int64_t cols,
                      float eps, int n_tokens, int8_t* q, int64_t q_stride, float* scale,
                      int32_t* sum, cudaStream_t stream) {
  rmsnorm_quantize_kernel<<<n_tokens, kThreads, 0, stream>>>(x, x_stride, weight, cols, eps, q,
                                                             q_stride, scale, sum);
  check_launch("rmsnorm_quantize");
}

void rmsnorm(const float* x, int64_t cols, const float* weight, float eps, int n_tokens,
             float* out, int64_t out_stride, cudaStream_t stream) {
  rmsnorm_kernel<<<n_tokens, kThreads, 0, stream>>>(x, cols, weight, eps, out, out_stride);
  check_launch("rmsnorm");
}

}  // namespace bitnet::cuda
