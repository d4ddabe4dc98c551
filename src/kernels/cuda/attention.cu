#include <cmath>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace bitnet::cuda {
namespace {

constexpr int kScoreChunk = 128;  // positions per scores block (a thread each)
constexpr int kLanes = 16;        // canonical_math.h
constexpr int kValueTile = 64;    // positions of V per shared-memory stage (two stages)

// canonical_math.h's exp_nonpositive, operation for operation.
__device__ float exp_nonpositive(float x) {
  constexpr float kMin = -87.33654f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                  kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
  x = fmaxf(x, kMin);
  const float n = rintf(__fmul_rn(x, kLog2e));
  float r = fmaf(n, -kLn2Hi, x);
  r = fmaf(n, -kLn2Lo, r);
  float p = fmaf(kP0, r, kP1);
  p = fmaf(p, r, kP2);
  p = fmaf(p, r, kP3);
  p = fmaf(p, r, kP4);
  p = fmaf(p, r, kP5);
  const float y = __fadd_rn(fmaf(p, __fmul_rn(r, r), r), 1.0f);
  return __fmul_rn(y, __int_as_float((static_cast<int>(n) + 127) << 23));
}

__device__ int64_t head_offset(const AttentionArgs& a, int t, int kv_head) {
  return a.slot[t] * a.cache_slot_stride + kv_head * a.cache_head_stride;
}

__device__ float* scores_of(const AttentionArgs& a, int t, int head) {
  return a.scores + (static_cast<int64_t>(t) * a.n_heads + head) * a.context;
}

template <int kGroup>
__global__ void __launch_bounds__(kScoreChunk) scores_kernel(AttentionArgs a) {
  extern __shared__ float q_s[];  // [kGroup][head_dim]
  const int hd = a.head_dim;
  allow_dependents();
  const int t = blockIdx.x, kvh = blockIdx.y;
  const int p = blockIdx.z * kScoreChunk + threadIdx.x;
  const int n_pos = a.pos[t] + 1;
  if (static_cast<int>(blockIdx.z) * kScoreChunk >= n_pos) return;
  // The key (up to 128 dims, sixteen 16-byte loads) is requested before q is staged.
  constexpr int kMaxChunks = 16;
  uint4 packed[kMaxChunks];
  if (p < n_pos) {
    const uint4* k = reinterpret_cast<const uint4*>(a.k_cache + head_offset(a, t, kvh) +
                                                    static_cast<int64_t>(p) * hd);
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      if (c < hd / 8) packed[c] = k[c];
    }
  }
  const float* q = a.q + static_cast<int64_t>(t) * a.n_heads * hd + kvh * kGroup * hd;
  for (int i = threadIdx.x; i < kGroup * hd; i += blockDim.x) q_s[i] = q[i];
  __syncthreads();
  if (p >= n_pos) return;
  float dot[kGroup] = {};
  // Each dot runs over d in order.
#pragma unroll
  for (int j = 0; j < kMaxChunks; ++j) {
    if (j < hd / 8) {
      const __half2* k2 = reinterpret_cast<const __half2*>(&packed[j]);
      const int d0 = 8 * j;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 kf = __half22float2(k2[i]);
#pragma unroll
        for (int h = 0; h < kGroup; ++h) {
          dot[h] = fmaf(q_s[h * hd + d0 + 2 * i], kf.x, dot[h]);
          dot[h] = fmaf(q_s[h * hd + d0 + 2 * i + 1], kf.y, dot[h]);
        }
      }
    }
  }
  const float inv_sqrt = 1.0f / sqrtf(static_cast<float>(hd));
#pragma unroll
  for (int h = 0; h < kGroup; ++h)
    scores_of(a, t, kvh * kGroup + h)[p] = __fmul_rn(dot[h], inv_sqrt);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}

// A block per (token, KV head); thread (h, d) owns output d of query head h of the group.
// First the softmax of the group's kGroup heads in place: e[p] = exp(s[p] - max s), and each
// head's 16-lane sum (lane j adds positions j, j + 16, ... in order; 16 kGroup threads at once).
// Then each thread runs its output's chain over the positions in order, V staged in shared
// memory kValueTile positions at a time, the next tile loading while the current one is used.
template <int kGroup>
__global__ void __launch_bounds__(1024) values_kernel(AttentionArgs a) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  const int hd = a.head_dim;
  __half* v_s = reinterpret_cast<__half*>(smem_bytes);  // [2][kValueTile][hd]
  __shared__ float lane_sum[kGroup][kLanes];
  __shared__ float inv_sum_s[kGroup];
  allow_dependents();
  const int t = blockIdx.x, kvh = blockIdx.y;
  const int h = threadIdx.x / hd, d = threadIdx.x % hd;
  const int n_pos = a.pos[t] + 1;
  const __half* values = a.v_cache + head_offset(a, t, kvh);
  float* scores[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) scores[g] = scores_of(a, t, kvh * kGroup + g);

  auto load_tile = [&](int buf, int start) {
    const int len = min(kValueTile, n_pos - start);
    const uint4* src = reinterpret_cast<const uint4*>(values + static_cast<int64_t>(start) * hd);
    uint4* dst = reinterpret_cast<uint4*>(v_s + buf * kValueTile * hd);
    for (int c = threadIdx.x; c < len * hd / 8; c += blockDim.x) cp_async16(dst + c, src + c);
    asm volatile("cp.async.commit_group;\n");
  };
  load_tile(0, 0);  // V does not depend on the softmax

  float max_score[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    float m = -INFINITY;
    for (int p = threadIdx.x; p < n_pos; p += blockDim.x) m = fmaxf(m, scores[g][p]);
    max_score[g] = block_max(m);
  }
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    for (int p = threadIdx.x; p < n_pos; p += blockDim.x) {
      scores[g][p] = exp_nonpositive(__fsub_rn(scores[g][p], max_score[g]));
    }
  }
  __syncthreads();
  if (threadIdx.x < kGroup * kLanes) {
    const int g = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
    const float* e = scores_of(a, t, kvh * kGroup + g);
    float sum = 0.0f;
#pragma unroll 8
    for (int p = lane; p < n_pos; p += kLanes) sum = __fadd_rn(sum, e[p]);
    lane_sum[g][lane] = sum;
  }
  __syncthreads();
  if (threadIdx.x < kGroup) {
    // reduce_lanes: (i, i + 8), (i, i + 4), (i, i + 2), (0, 1).
    const float* lanes = lane_sum[threadIdx.x];
    float h8[8], h4[4];
    for (int i = 0; i < 8; ++i) h8[i] = __fadd_rn(lanes[i], lanes[i + 8]);
    for (int i = 0; i < 4; ++i) h4[i] = __fadd_rn(h8[i], h8[i + 4]);
    inv_sum_s[threadIdx.x] = 1.0f / __fadd_rn(__fadd_rn(h4[0], h4[2]), __fadd_rn(h4[1], h4[3]));
  }

  const float* e = scores[0];
#pragma unroll
  for (int g = 1; g < kGroup; ++g) {
    if (g == h) e = scores[g];
  }
  float acc = 0.0f;
  for (int start = 0, buf = 0; start < n_pos; start += kValueTile, buf ^= 1) {
    if (start + kValueTile < n_pos) {
      load_tile(buf ^ 1, start + kValueTile);
      asm volatile("cp.async.wait_group 1;\n");
    } else {
      asm volatile("cp.async.wait_group 0;\n");
    }
    __syncthreads();
    const __half* v = v_s + buf * kValueTile * hd + d;
    const int len = min(kValueTile, n_pos - start);
#pragma unroll 8
    for (int p = 0; p < len; ++p) acc = fmaf(e[start + p], __half2float(v[p * hd]), acc);
    __syncthreads();  // the next iteration's load overwrites this buffer
  }
  a.out[(static_cast<int64_t>(t) * a.n_heads + kvh * kGroup + h) * hd + d] =
      __fmul_rn(acc, inv_sum_s[h]);
}

template <int kGroup>
void launch(const AttentionArgs& a, int n_tokens, cudaStream_t stream) {
  const unsigned tokens = static_cast<unsigned>(n_tokens);
  const unsigned chunks = static_cast<unsigned>((a.context + kScoreChunk - 1) / kScoreChunk);
  scores_kernel<kGroup><<<dim3(tokens, a.n_kv_heads, chunks), kScoreChunk,
                          sizeof(float) * kGroup * a.head_dim, stream>>>(a);
  check_launch("attention scores");
  const size_t smem = 2 * sizeof(__half) * kValueTile * a.head_dim;
  values_kernel<kGroup><<<dim3(tokens, a.n_kv_heads), kGroup * a.head_dim, smem, stream>>>(a);
  check_launch("attention values");
}

}  // namespace

void attention(const AttentionArgs& a, int n_tokens, cudaStream_t stream) {
  if (a.n_heads / a.n_kv_heads * a.head_dim > 1024 || a.head_dim % 32 != 0) {
    check(cudaErrorInvalidValue,
          "attention: head_dim must be a multiple of 32, and query heads per KV head x head_dim "
          "at most 1024");
  }
  switch (a.n_heads / a.n_kv_heads) {
    case 1:
      launch<1>(a, n_tokens, stream);
      break;
    case 2:
      launch<2>(a, n_tokens, stream);
      break;
    case 4:
      launch<4>(a, n_tokens, stream);
      break;
    case 8:
      launch<8>(a, n_tokens, stream);
      break;
    default:
      check(cudaErrorInvalidValue, "attention: query heads per KV head must be 1, 2, 4 or 8");
  }
}

int64_t attention_workspace_floats(int n_heads, int context, int max_tokens) {
  return static_cast<int64_t>(max_tokens) * n_heads * context;
}

}  // namespace bitnet::cuda
