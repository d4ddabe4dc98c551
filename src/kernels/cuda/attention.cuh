#pragma once
// Causal attention over the in-place f16 KV cache, split over the sequence (flash-decoding):
// each block takes one token, one KV head (with the query heads that share it) and one chunk of
// kAttentionChunk positions, and leaves the chunk's max score, exp-sum and unnormalized output;
// a second kernel merges the chunks. Prefill runs the same kernels, each token over its own
// prefix. The CPU kernels' formula (s = (q . k) * (1 / sqrt(head_dim)), softmax in f32), summed in
// another order: results agree to rounding.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bitnet::cuda {

constexpr int kAttentionChunk = 128;

struct AttentionArgs {
  const float* q = nullptr;  // [n][n_heads * head_dim], after RoPE
  const __half* k_cache = nullptr;  // this layer's keys in slot 0: [kv_head][context][head_dim]
  const __half* v_cache = nullptr;
  int64_t cache_slot_stride = 0, cache_head_stride = 0;  // elements
  const int32_t* pos = nullptr;   // [n]: the token attends to positions [0, pos]
  const int32_t* slot = nullptr;  // [n]
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;  // n_heads / n_kv_heads in {1, 2, 4, 8};
                                                  // head_dim % 8 == 0
  int context = 0;                                // positions the cache holds per slot
  float* out = nullptr;      // [n][n_heads * head_dim]
  float* partial = nullptr;  // attention_workspace_floats(...)
};

void attention(const AttentionArgs& args, int n_tokens, cudaStream_t stream);
int64_t attention_workspace_floats(int n_heads, int head_dim, int context, int max_tokens);

}  // namespace bitnet::cuda
