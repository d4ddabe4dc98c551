#include <cmath>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kThreads = 128;

__host__ __device__ int splits_for(int context) { return (context + kAttentionChunk - 1) / kAttentionChunk; }

// Partial results of one (token, query head, chunk): max score, exp-sum, then head_dim outputs.
__device__ float* partial_at(const AttentionArgs& a, int t, int head, int split) {
  return a.partial +
         ((static_cast<int64_t>(t) * a.n_heads + head) * splits_for(a.context) + split) *
             (a.head_dim + 2);
}

template <int kGroup>
__global__ void __launch_bounds__(kThreads) attention_chunk_kernel(AttentionArgs a) {
  extern __shared__ float smem[];
  const int hd = a.head_dim;
  float* q_s = smem;                     // [kGroup][hd]
  float* e_s = smem + kGroup * hd;       // [kGroup][kAttentionChunk]
  const int t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int n_pos = a.pos[t] + 1;
  const int begin = split * kAttentionChunk;
  if (begin >= n_pos) return;  // past this token's prefix: the merge skips this chunk
  const int len = min(kAttentionChunk, n_pos - begin);
  const int64_t head_offset = a.slot[t] * a.cache_slot_stride + kvh * a.cache_head_stride;
  const __half* keys = a.k_cache + head_offset + static_cast<int64_t>(begin) * hd;
  const __half* values = a.v_cache + head_offset + static_cast<int64_t>(begin) * hd;
  const float* q = a.q + static_cast<int64_t>(t) * a.n_heads * hd + kvh * kGroup * hd;
  for (int i = threadIdx.x; i < kGroup * hd; i += blockDim.x) q_s[i] = q[i];
  __syncthreads();

  const float inv_sqrt = 1.0f / sqrtf(static_cast<float>(hd));
  for (int p = threadIdx.x; p < len; p += blockDim.x) {
    const uint4* k = reinterpret_cast<const uint4*>(keys + static_cast<int64_t>(p) * hd);
    float dot[kGroup] = {};
    for (int c = 0; c < hd / 8; ++c) {
      const uint4 packed = k[c];
      const __half2* k2 = reinterpret_cast<const __half2*>(&packed);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 kf = __half22float2(k2[i]);
#pragma unroll
        for (int h = 0; h < kGroup; ++h) {
          dot[h] = fmaf(q_s[h * hd + 8 * c + 2 * i], kf.x, dot[h]);
          dot[h] = fmaf(q_s[h * hd + 8 * c + 2 * i + 1], kf.y, dot[h]);
        }
      }
    }
#pragma unroll
    for (int h = 0; h < kGroup; ++h) e_s[h * kAttentionChunk + p] = dot[h] * inv_sqrt;
  }
  __syncthreads();

  float max_score[kGroup], exp_sum[kGroup];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    float m = -INFINITY;
    for (int p = threadIdx.x; p < len; p += blockDim.x) m = fmaxf(m, e_s[h * kAttentionChunk + p]);
    max_score[h] = block_max(m);
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    float s = 0.0f;
    for (int p = threadIdx.x; p < len; p += blockDim.x) {
      const float e = expf(e_s[h * kAttentionChunk + p] - max_score[h]);
      e_s[h * kAttentionChunk + p] = e;
      s += e;
    }
    exp_sum[h] = block_sum(s);
  }
  __syncthreads();

  for (int d2 = threadIdx.x; d2 < hd / 2; d2 += blockDim.x) {
    float2 acc[kGroup] = {};
    for (int p = 0; p < len; ++p) {
      const float2 v =
          __half22float2(reinterpret_cast<const __half2*>(values + static_cast<int64_t>(p) * hd)[d2]);
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
        const float e = e_s[h * kAttentionChunk + p];
        acc[h].x = fmaf(e, v.x, acc[h].x);
        acc[h].y = fmaf(e, v.y, acc[h].y);
      }
    }
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float* out = partial_at(a, t, kvh * kGroup + h, split);
      out[2 + 2 * d2] = acc[h].x;
      out[3 + 2 * d2] = acc[h].y;
    }
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float* out = partial_at(a, t, kvh * kGroup + h, split);
      out[0] = max_score[h];
      out[1] = exp_sum[h];
    }
  }
}

// out = sum_c w_c acc_c / sum_c w_c l_c with w_c = exp(m_c - max m) over the token's chunks.
__global__ void __launch_bounds__(kThreads) attention_merge_kernel(AttentionArgs a) {
  const int t = blockIdx.x, head = blockIdx.y;
  const int chunks = (a.pos[t] + 1 + kAttentionChunk - 1) / kAttentionChunk;
  float m = -INFINITY;
  for (int c = 0; c < chunks; ++c) m = fmaxf(m, partial_at(a, t, head, c)[0]);
  float l = 0.0f;
  for (int c = 0; c < chunks; ++c) {
    const float* p = partial_at(a, t, head, c);
    l += expf(p[0] - m) * p[1];
  }
  float* out = a.out + (static_cast<int64_t>(t) * a.n_heads + head) * a.head_dim;
  for (int d = threadIdx.x; d < a.head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int c = 0; c < chunks; ++c) {
      const float* p = partial_at(a, t, head, c);
      acc += expf(p[0] - m) * p[2 + d];
    }
    out[d] = acc / l;
  }
}

template <int kGroup>
void launch_chunks(const AttentionArgs& a, int n_tokens, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(a.n_kv_heads),
                  static_cast<unsigned>(splits_for(a.context)));
  const size_t smem = sizeof(float) * kGroup * (a.head_dim + kAttentionChunk);
  attention_chunk_kernel<kGroup><<<grid, kThreads, smem, stream>>>(a);
}

}  // namespace

void attention(const AttentionArgs& a, int n_tokens, cudaStream_t stream) {
  switch (a.n_heads / a.n_kv_heads) {
    case 1: launch_chunks<1>(a, n_tokens, stream); break;
    case 2: launch_chunks<2>(a, n_tokens, stream); break;
    case 4: launch_chunks<4>(a, n_tokens, stream); break;
    case 8: launch_chunks<8>(a, n_tokens, stream); break;
    default: check(cudaErrorInvalidValue, "attention: query heads per KV head must be 1, 2, 4 or 8");
  }
  check_launch("attention chunks");
  attention_merge_kernel<<<dim3(static_cast<unsigned>(n_tokens), static_cast<unsigned>(a.n_heads)),
                           kThreads, 0, stream>>>(a);
  check_launch("attention merge");
}

int64_t attention_workspace_floats(int n_heads, int head_dim, int context, int max_tokens) {
  return static_cast<int64_t>(max_tokens) * n_heads * splits_for(context) * (head_dim + 2);
}

}  // namespace bitnet::cuda
