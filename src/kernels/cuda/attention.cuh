#pragma once
// Causal attention over the in-place f16 KV cache, in the CPU's exact arithmetic: every dot
// product, exp and sum runs in the order of kernels/cpu/canonical_math.h and attention_scalar,
// so the GPU's attention output is bit-identical to the CPU's (and a 30-layer model does not
// drift apart at int8 rounding ties). Two kernels, each token over its own prefix [0, pos]:
//   scores:  s[p] = (q . k[p]) * (1 / sqrt(head_dim)), a thread per position, blocks over chunks
//            of positions and KV heads (the query heads sharing a KV head read it once);
//   values:  per (token, KV head) block, e[p] = exp(s[p] - max s) (Cephes expf) and the 16-lane
//            sum of e, then out[d] = (sum_p e[p] v[p][d]) / sum, a thread per output, positions
//            in order.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bitnet::cuda {

struct AttentionArgs {
  const float* q = nullptr;         // [n][n_heads * head_dim], after RoPE
  const __half* k_cache = nullptr;  // this layer's keys in slot 0: [kv_head][context][head_dim]
  const __half* v_cache = nullptr;
  int64_t cache_slot_stride = 0, cache_head_stride = 0;  // elements
  const int32_t* pos = nullptr;                   // [n]: the token attends to positions [0, pos]
  const int32_t* slot = nullptr;                  // [n]
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;  // n_heads / n_kv_heads in {1, 2, 4, 8};
                                                  // head_dim % 32 == 0, group * head_dim <= 1024
  int context = 0;                                // positions the cache holds per slot
  float* out = nullptr;                           // [n][n_heads * head_dim]
  float* scores = nullptr;  // [n][n_heads][context] scratch: scores, then probabilities
};

void attention(const AttentionArgs& args, int n_tokens, cudaStream_t stream);
// Floats of AttentionArgs::scores for up to max_tokens tokens.
int64_t attention_workspace_floats(int n_heads, int context, int max_tokens);

}  // namespace bitnet::cuda
