#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lm_head.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerWarp = 4;    // each activation load feeds this many rows
constexpr int kTokensPerPass = 8;  // accumulators: kTokensPerPass x kRowsPerWarp per lane

// Eight weights of row r starting at column c, as floats.
__device__ __forceinline__ void load8(const LmHeadWeights& w, int64_t r, int64_t c, float (&v)[8]) {
  if (w.int8) {
    const int2 raw = __ldg(reinterpret_cast<const int2*>(w.codes + r * w.x_stride + c));
    const int8_t* b = reinterpret_cast<const int8_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(b[i]);
  } else {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(w.bf16 + r * w.cols + c));
    const uint32_t* p = reinterpret_cast<const uint32_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(p[i] << 16);
      v[2 * i + 1] = __uint_as_float(p[i] & 0xffff0000u);
    }
  }
}

// A warp takes kRowsPerWarp rows; lane l reads columns [8l, 8l + 8) + 256 i of each row and
// of every token's activations.
template <int kTokens>
__global__ void __launch_bounds__(kWarps * 32)
    lm_head_kernel(LmHeadWeights w, const float* x, int first_token, int n_tokens, float* logits) {
  const int lane = threadIdx.x % 32;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (r0 >= w.rows) return;
  const int tokens = min(kTokens, n_tokens - first_token);
  const int64_t cols = w.int8 ? w.x_stride : w.cols;
  float acc[kTokens][kRowsPerWarp] = {};
  for (int64_t c = 8 * lane; c < cols; c += 256) {
    float wv[kRowsPerWarp][8];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (r0 + r < w.rows) {
        load8(w, r0 + r, c, wv[r]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[r][i] = 0.0f;
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < tokens) {
        const float4* xp =
            reinterpret_cast<const float4*>(x + static_cast<int64_t>(first_token + t) * w.x_stride + c);
        const float4 xa = __ldg(xp), xb = __ldg(xp + 1);
        const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[t][r] = fmaf(wv[r][i], xv[i], acc[t][r]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    if (t >= tokens) break;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float sum = warp_sum(acc[t][r]);
      if (lane == 0 && r0 + r < w.rows) {
        logits[static_cast<int64_t>(first_token + t) * w.rows + r0 + r] =
            w.int8 ? sum * w.row_scales[r0 + r] : sum;
      }
    }
  }
}

constexpr int kArgmaxThreads = 1024;

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, int64_t vocab, int32_t* ids) {
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int64_t best_id = vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v > best || best_id == vocab) {  // strided scan: a later equal value never wins
      best = v;
      best_id = i;
    }
  }
  __shared__ float values[kArgmaxThreads / 32];
  __shared__ int64_t indices[kArgmaxThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t id = __shfl_xor_sync(0xffffffffu, best_id, offset);
    if (v > best || (v == best && id < best_id)) {
      best = v;
      best_id = id;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    values[warp] = best;
    indices[warp] = best_id;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < kArgmaxThreads / 32 ? values[lane] : -INFINITY;
    best_id = lane < kArgmaxThreads / 32 ? indices[lane] : vocab;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, offset);
      const int64_t id = __shfl_xor_sync(0xffffffffu, best_id, offset);
      if (v > best || (v == best && id < best_id)) {
        best = v;
        best_id = id;
      }
    }
    if (lane == 0) ids[blockIdx.x] = static_cast<int32_t>(best_id < vocab ? best_id : 0);
  }
}

}  // namespace

void lm_head(const LmHeadWeights& w, const float* x, int n_tokens, float* logits,
             cudaStream_t stream) {
  const unsigned blocks =
      static_cast<unsigned>((w.rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  for (int first = 0; first < n_tokens; first += kTokensPerPass) {
    if (n_tokens - first == 1) {
      lm_head_kernel<1><<<blocks, kWarps * 32, 0, stream>>>(w, x, first, n_tokens, logits);
    } else {
      lm_head_kernel<kTokensPerPass><<<blocks, kWarps * 32, 0, stream>>>(w, x, first, n_tokens,
                                                                          logits);
    }
    check_launch("lm_head");
  }
}

void argmax(const float* logits, int64_t vocab, int n_tokens, int32_t* ids, cudaStream_t stream) {
  argmax_kernel<<<static_cast<unsigned>(n_tokens), kArgmaxThreads, 0, stream>>>(logits, vocab, ids);
  check_launch("argmax");
}

}  // namespace bitnet::cuda
