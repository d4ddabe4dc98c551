#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/norm_quantize.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kQuantizeThreads = 1024;

__global__ void embed_kernel(const uint16_t* embed, int64_t hidden, const int32_t* tokens,
                             float* x) {
  const uint16_t* row = embed + static_cast<int64_t>(tokens[blockIdx.x]) * hidden;
  float* out = x + blockIdx.x * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[i] = __uint_as_float(static_cast<uint32_t>(row[i]) << 16);
  }
}

template <int kPerThread>
__global__ void __launch_bounds__(kQuantizeThreads)
    rmsnorm_quantize_kernel(const float* x, int64_t x_stride, const float* weight, int64_t cols,
                            float eps, int8_t* q, int64_t q_stride, float* scale, int32_t* sum) {
  const int t = blockIdx.x;
  q += t * q_stride;
  for (int64_t i = cols + threadIdx.x; i < q_stride; i += blockDim.x) q[i] = 0;
  const QuantizedRow row = rmsnorm_quantize_row<kPerThread>(x + t * x_stride, weight, cols, eps,
                                                            [&](int64_t i, int8_t c) { q[i] = c; });
  if (threadIdx.x == 0) {
    scale[t] = row.scale;
    sum[t] = row.sum;
  }
}

__global__ void rmsnorm_kernel(const float* x, int64_t cols, const float* weight, float eps,
                               float* out, int64_t out_stride) {
  x += blockIdx.x * cols;
  out += blockIdx.x * out_stride;
  double sum_sq = 0.0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    sum_sq += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  const float inv = block_inv_rms(sum_sq, cols, eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[i] = normed(x[i], weight[i], inv);
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
  if (cols <= 4 * kQuantizeThreads) {
    rmsnorm_quantize_kernel<4><<<n_tokens, kQuantizeThreads, 0, stream>>>(
        x, x_stride, weight, cols, eps, q, q_stride, scale, sum);
  } else if (cols <= kMaxQuantizeCols) {
    rmsnorm_quantize_kernel<16><<<n_tokens, kQuantizeThreads, 0, stream>>>(
        x, x_stride, weight, cols, eps, q, q_stride, scale, sum);
  } else {
    check(cudaErrorInvalidValue, "rmsnorm_quantize: more than 16384 columns");
  }
  check_launch("rmsnorm_quantize");
}

void rmsnorm(const float* x, int64_t cols, const float* weight, float eps, int n_tokens, float* out,
             int64_t out_stride, cudaStream_t stream) {
  rmsnorm_kernel<<<n_tokens, kThreads, 0, stream>>>(x, cols, weight, eps, out, out_stride);
  check_launch("rmsnorm");
}

}  // namespace bitnet::cuda
