#pragma once
// The GPU's packed ternary layout (plain C++: the host packs, the kernels read).
//
// A row of K weights is padded to K_pad, a multiple of kCudaKStep, and stored as K_pad / 16
// little-endian 32-bit words. Word w holds weights [16w, 16w + 16) as 2-bit codes c = t + 1 in
// {0, 1, 2} (code 3 never occurs; padding codes are 0 and meet zero activations):
//
//   weight 16w + 4j + b   is bits [8b + 2j, 8b + 2j + 2) of word w     (j, b in 0..3)
//
// so (word >> 2j) & 0x03030303 is four bytes holding the codes of weights 16w + 4j .. +3, in
// order: one shift and one mask give a dp4a / int8-MMA operand that lines up with four
// consecutive int8 activations. Kernels multiply codes, not weights, and subtract the
// activations' sum once: sum_k t_k a_k = sum_k c_k a_k - sum_k a_k (exact in int32).
//
// Rows are reordered so that each output pair (2i, 2i + 1) that an epilogue combines sits side
// by side (forward_cuda.cpp builds the orders): RoPE's partners (d, d + head_dim / 2) of q and k,
// and gate_i next to up_i.

#include <cstdint>
#include <span>

namespace bitnet::cuda_layout {

constexpr int64_t kCudaKStep = 128;  // K padding: one pipeline stage of the GEMM

constexpr int64_t padded_k(int64_t k) {
  return (k + kCudaKStep - 1) / kCudaKStep * kCudaKStep;
}
constexpr int64_t row_words(int64_t k) {
  return padded_k(k) / 16;
}

// t: K ternary values in {-1, 0, 1}; out: row_words(K) words.
inline void pack_row(std::span<const int8_t> t, std::span<uint32_t> out) {
  for (uint32_t& word : out) word = 0;
  for (size_t k = 0; k < t.size(); ++k) {
    const uint32_t code = static_cast<uint32_t>(t[k] + 1);
    const size_t w = k / 16, j = (k % 16) / 4, b = k % 4;
    out[w] |= code << (8 * b + 2 * j);
  }
}

// The inverse of pack_row for the first t.size() weights.
inline void unpack_row(std::span<const uint32_t> words, std::span<int8_t> t) {
  for (size_t k = 0; k < t.size(); ++k) {
    const size_t w = k / 16, j = (k % 16) / 4, b = k % 4;
    t[k] = static_cast<int8_t>(static_cast<int>((words[w] >> (8 * b + 2 * j)) & 3u) - 1);
  }
}

}  // namespace bitnet::cuda_layout
