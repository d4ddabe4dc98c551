#pragma once
// The model's floating-point ops, fp32, in the order transformers computes them.

#include <cstdint>
#include <vector>

namespace bitnet {

// out = weight * (x / sqrt(mean(x^2) + eps))   (LlamaRMSNorm)
void rmsnorm(const float* x, const float* weight, float* out, int64_t n, float eps);

// Rotate-half (NEOX) RoPE on n_heads vectors of head_dim, in place. cos/sin hold head_dim/2
// values for this position: pairs are (i, i + head_dim/2).
void rope(float* x, int n_heads, int head_dim, const float* cos, const float* sin);

// transformers' default RoPE tables in f32 (inv_freq = 1 / theta^(2i / head_dim), angle =
// pos * inv_freq): cos and sin of [context][head_dim / 2], as rope() and the GPU read them.
void rope_tables(float theta, int head_dim, int context, std::vector<float>& cos,
                 std::vector<float>& sin);

// out[i] = relu(gate[i])^2 * up[i]. relu^2 overflows fp16, so the FFN stays fp32.
void relu2_mul(const float* gate, const float* up, float* out, int64_t n);

// out[i] = f32_to_f16(x[i]), with F16C where the CPU has it.
void f32_to_f16_row(const float* x, uint16_t* out, int64_t n);

// y[r] = sum_k x[k] * W[r][k] for rows [row_begin, row_end) of a bf16 matrix [rows][cols].
void matvec_bf16(const uint16_t* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                 int64_t row_end);

}  // namespace bitnet
