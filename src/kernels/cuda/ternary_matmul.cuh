#pragma once
// int8 activations x packed ternary weights (ternary_layout.h), exact int32 dot products, then
// an epilogue that scales each output pair (2i, 2i + 1) and stores it where the next op reads it:
//   y[t][r] = float(sum_k t[r][k] a[t][k]) / act_scale[t] * row_scale[r]      (as the CPU)

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace bitnet::cuda {

struct TernaryWeights {
  const uint32_t* words = nullptr;    // [rows][row_words(cols)]
  const float* row_scales = nullptr;  // [rows]
  int64_t rows = 0, cols = 0;         // rows is even
};

enum class EpilogueKind : int {
  store,      // out[t][r] = y
  add,        // out[t][r] += y (the residual stream)
  relu2_mul,  // rows (2i, 2i+1) are (gate_i, up_i): out[t][i] = relu(gate)^2 * up
  qkv_rope,   // rows of q, k, v (RoPE pairs side by side): q to out, k and v into the KV cache
};

struct Epilogue {
  EpilogueKind kind = EpilogueKind::store;
  float* out = nullptr;
  int64_t out_stride = 0;  // floats between tokens' rows of out
  // qkv_rope only. Rows [0, q_dim) are q, [q_dim, q_dim + kv_dim) k, then v; in the q and k
  // parts rows (2m, 2m + 1) are dims (j, j + head_dim / 2) of head m / (head_dim / 2), with
  // j = m % (head_dim / 2); v rows are in order.
  int q_dim = 0, kv_dim = 0, head_dim = 0;
  const int32_t* pos = nullptr;     // [n] position of each token
  const int32_t* slot = nullptr;    // [n] KV-cache slot of each token
  const float* rope_cos = nullptr;  // [context][head_dim / 2]
  const float* rope_sin = nullptr;
  __half* k_cache = nullptr;  // this layer's keys in slot 0: [kv_head][context][head_dim]
  __half* v_cache = nullptr;
  int64_t cache_slot_stride = 0;  // elements from one slot's layer to the next slot's
  int64_t cache_head_stride = 0;  // elements per kv head (context x head_dim)
};

// The f32 input of a decode step's matmul and the RMSNorm in front of it.
struct NormedInput {
  const float* x = nullptr;       // [cols]
  const float* weight = nullptr;  // [cols]
  float eps = 0;
};

// One token (decode), cols <= kGemvMaxCols: each block normalizes and quantizes the input
// itself (as rmsnorm_quantize, norm.cuh) while its first weight loads are in flight, then a warp
// per output pair streams both rows with 16-byte loads and dp4a and applies the epilogue.
constexpr int64_t kGemvMaxCols = 8192;
void ternary_gemv(const TernaryWeights& w, const NormedInput& input, const Epilogue& epilogue,
                  cudaStream_t stream);

// n_tokens >= 1 tokens: int8 tensor-core MMA on tiles of codes (m16n8k32), K split across
// blocks when there are few tiles, int32 partial sums to `workspace`, then the epilogue.
void ternary_gemm(const TernaryWeights& w, const Int8Acts& acts, int n_tokens,
                  const Epilogue& epilogue, int32_t* workspace, cudaStream_t stream);
// int32 elements of workspace ternary_gemm needs for up to max_tokens tokens.
int64_t ternary_gemm_workspace(int64_t rows, int max_tokens);

}  // namespace bitnet::cuda
