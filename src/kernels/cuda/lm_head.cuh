#pragma once
// The lm_head on the GPU, bf16 or int8 (the CPU's LmHead formats: int8 codes with one f32 scale
// per row), with f32 activations and f32 accumulation; and the greedy argmax, so that decoding
// can bring back only the token id.

#include <cuda_runtime.h>

#include <cstdint>

namespace bitnet::cuda {

struct LmHeadWeights {
  bool int8 = false;
  const uint16_t* bf16 = nullptr;     // [rows][cols]; cols % 16 == 0
  const int8_t* codes = nullptr;      // int8: [rows][x_stride]
  const float* row_scales = nullptr;  // int8: [rows]
  int64_t rows = 0, cols = 0;
  int64_t x_stride = 0;  // padded columns (a multiple of 16); x is zero past cols
};

// logits[t][r] = W[r] . x[t] for n_tokens tokens; x: [n_tokens][x_stride].
void lm_head(const LmHeadWeights& w, const float* x, int n_tokens, float* logits,
             cudaStream_t stream);

// ids[t] = argmax of logits[t][0, vocab), ties to the lowest id (as the CPU sampler); keys is
// scratch of n_tokens elements.
void argmax(const float* logits, int64_t vocab, int n_tokens, unsigned long long* keys,
            int32_t* ids, cudaStream_t stream);

}  // namespace bitnet::cuda
