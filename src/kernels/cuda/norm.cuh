#pragma once
// Embedding lookup and RMSNorm, the latter fused with int8 activation quantization. The sum of
// squares is accumulated in double (in another order than the CPU's, which can move the f32
// variance by an ulp in rare cases) and every other step rounds as the CPU's ops do, so the
// quantized activations match the CPU path's.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace bitnet::cuda {

// x[t][:] = embed[tokens[t]][:] as f32; embed is bf16 [vocab][hidden].
void embed_rows(const uint16_t* embed, int64_t hidden, const int32_t* tokens, int n_tokens,
                float* x, cudaStream_t stream);

constexpr int64_t kMaxQuantizeCols = 16384;

// For each token t (cols <= kMaxQuantizeCols): h = weight * (x[t] / rms(x[t])), then
// transformers' ActQuant of h:
//   s = 127 / max(max|h|, 1e-5), q = clamp(round_half_even(h * s), -128, 127)
// into out.q[t][0, cols) (the row's padding up to out.stride is zeroed), out.scale[t] = s and
// out.sum[t] = sum of q.
void rmsnorm_quantize(const float* x, int64_t x_stride, const float* weight, int64_t cols,
                      float eps, int n_tokens, int8_t* q, int64_t q_stride, float* scale,
                      int32_t* sum, cudaStream_t stream);

// out[t * out_stride + i] = weight[i] * (x[t][i] / rms(x[t])) in f32 (the final norm before the
// lm_head); x is [n_tokens][cols].
void rmsnorm(const float* x, int64_t cols, const float* weight, float eps, int n_tokens, float* out,
             int64_t out_stride, cudaStream_t stream);

}  // namespace bitnet::cuda
