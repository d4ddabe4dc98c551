#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lm_head.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerWarp = 4;    // each activation load feeds this many rows
constexpr int kTokensPerPass = 4;  // accumulators: kTokensPerPass x kRowsPerWarp per lane

constexpr int kColsPerLane = 16;

// Sixteen weights of a row as stored: one 16-byte load of int8 codes, two of bf16.
template <bool kInt8>
struct Raw16 {
  uint4 v[kInt8 ? 1 : 2];

  __device__ void load(const LmHeadWeights& w, int64_t r, int64_t c) {
    if constexpr (kInt8) {
      v[0] = __ldg(reinterpret_cast<const uint4*>(w.codes + r * w.x_stride + c));
    } else {
      const uint4* p = reinterpret_cast<const uint4*>(w.bf16 + r * w.cols + c);
      v[0] = __ldg(p);
      v[1] = __ldg(p + 1);
    }
  }
  __device__ void to_float(float (&out)[16]) const {
    if constexpr (kInt8) {
      const int8_t* b = reinterpret_cast<const int8_t*>(v);
#pragma unroll
      for (int i = 0; i < 16; ++i) out[i] = static_cast<float>(b[i]);
    } else {
      const uint32_t* u = reinterpret_cast<const uint32_t*>(v);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        out[2 * i] = __uint_as_float(u[i] << 16);
        out[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
      }
    }
  }
};

// A warp takes kRowsPerWarp rows; lane l reads columns [16l, 16l + 16) + 512 i of each row and
// of every token's activations (each activation load feeds kRowsPerWarp rows). The rows' next
// 512 columns are requested before the current ones are used.
template <bool kInt8, int kTokens>
__global__ void __launch_bounds__(kWarps * 32)
    lm_head_kernel(LmHeadWeights w, const float* x, int first_token, int n_tokens, float* logits) {
  const int lane = threadIdx.x % 32;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (r0 >= w.rows) return;
  const int tokens = min(kTokens, n_tokens - first_token);
  const int64_t cols = kInt8 ? w.x_stride : w.cols;
  float acc[kTokens][kRowsPerWarp] = {};
  Raw16<kInt8> current[kRowsPerWarp], next[kRowsPerWarp];
  auto fetch = [&](int64_t c, Raw16<kInt8>(&raw)[kRowsPerWarp]) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (r0 + r < w.rows) raw[r].load(w, r0 + r, c);
    }
  };
  int64_t c = kColsPerLane * lane;
  if (c < cols) fetch(c, current);
  for (; c < cols; c += 32 * kColsPerLane) {
    if (c + 32 * kColsPerLane < cols) fetch(c + 32 * kColsPerLane, next);
    float wv[kRowsPerWarp][kColsPerLane];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (r0 + r < w.rows) {
        current[r].to_float(wv[r]);
      } else {
#pragma unroll
        for (int i = 0; i < kColsPerLane; ++i) wv[r][i] = 0.0f;
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < tokens) {
        const float4* xp = reinterpret_cast<const float4*>(
            x + static_cast<int64_t>(first_token + t) * w.x_stride + c);
#pragma unroll
        for (int q = 0; q < kColsPerLane / 4; ++q) {
          const float4 xq = __ldg(xp + q);
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            acc[t][r] = fmaf(wv[r][4 * q], xq.x, acc[t][r]);
            acc[t][r] = fmaf(wv[r][4 * q + 1], xq.y, acc[t][r]);
            acc[t][r] = fmaf(wv[r][4 * q + 2], xq.z, acc[t][r]);
            acc[t][r] = fmaf(wv[r][4 * q + 3], xq.w, acc[t][r]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) current[r] = next[r];
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    if (t >= tokens) break;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float sum = warp_sum(acc[t][r]);
      if (lane == 0 && r0 + r < w.rows) {
        logits[static_cast<int64_t>(first_token + t) * w.rows + r0 + r] =
            kInt8 ? sum * w.row_scales[r0 + r] : sum;
      }
    }
  }
}

template <bool kInt8>
void launch_lm_head(const LmHeadWeights& w, const float* x, int n_tokens, float* logits,
                    cudaStream_t stream) {
  const unsigned blocks =
      static_cast<unsigned>((w.rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  for (int first = 0; first < n_tokens; first += kTokensPerPass) {
    if (n_tokens - first == 1) {
      lm_head_kernel<kInt8, 1><<<blocks, kWarps * 32, 0, stream>>>(w, x, first, n_tokens, logits);
    } else {
      lm_head_kernel<kInt8, kTokensPerPass>
          <<<blocks, kWarps * 32, 0, stream>>>(w, x, first, n_tokens, logits);
    }
    check_launch("lm_head");
  }
}

// Argmax as a 64-bit key: the float's bits made to order as unsigned integers, then the id
// inverted, so that atomicMax keeps the largest value and, among equals, the lowest id.
// NaN never wins.
__device__ __forceinline__ unsigned long long argmax_key(float v, int64_t id) {
  if (isnan(v)) return 0;
  uint32_t u = __float_as_uint(v);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(u) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}

constexpr int kArgmaxThreads = 256;
constexpr int kArgmaxBlocksPerToken = 64;

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, int64_t vocab, unsigned long long* keys) {
  const float* row = logits + blockIdx.y * vocab;
  unsigned long long best = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vocab;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    best = max(best, argmax_key(row[i], i));
  }
  for (int offset = 16; offset > 0; offset >>= 1)
    best = max(best, __shfl_xor_sync(0xffffffffu, best, offset));
  if (threadIdx.x % 32 == 0 && best != 0) atomicMax(keys + blockIdx.y, best);
}

__global__ void argmax_ids_kernel(const unsigned long long* keys, int n_tokens, int32_t* ids) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n_tokens) ids[t] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(keys[t]));
}

}  // namespace

void lm_head(const LmHeadWeights& w, const float* x, int n_tokens, float* logits,
             cudaStream_t stream) {
  if (w.int8) {
    launch_lm_head<true>(w, x, n_tokens, logits, stream);
  } else {
    launch_lm_head<false>(w, x, n_tokens, logits, stream);
  }
}

void argmax(const float* logits, int64_t vocab, int n_tokens, unsigned long long* keys,
            int32_t* ids, cudaStream_t stream) {
  check(
      cudaMemsetAsync(keys, 0, sizeof(unsigned long long) * static_cast<size_t>(n_tokens), stream),
      "argmax");
  argmax_kernel<<<dim3(kArgmaxBlocksPerToken, static_cast<unsigned>(n_tokens)), kArgmaxThreads, 0,
                  stream>>>(logits, vocab, keys);
  check_launch("argmax");
  argmax_ids_kernel<<<(n_tokens + 255) / 256, 256, 0, stream>>>(keys, n_tokens, ids);
  check_launch("argmax ids");
}

}  // namespace bitnet::cuda
