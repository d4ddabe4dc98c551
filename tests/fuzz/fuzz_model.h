#pragma once
// Shared by the fuzz targets that load a whole model: what the forward pass assumes of loaded
// weights without checking again.

#include <cstdint>

#include "bitnet/model.h"
#include "fuzz_common.h"
#include "model/weights.h"

namespace bitnet::fuzz {

// What the forward pass assumes of loaded weights without checking.
inline void check_weights(const Model& model) {
  const ModelConfig& c = model.config();
  const Model::Weights& w = model.weights();
  const auto dense_ok = [&](const DenseMatrix& m) {
    return m.rows == c.vocab_size && m.cols == c.hidden_dim && m.data != nullptr;
  };
  if (!dense_ok(w.embed) || !dense_ok(w.lm_head())) fail("embedding / lm_head shape");
  if (w.layers.size() != static_cast<size_t>(c.n_layers)) fail("layer count");
  // attn_sub_norm normalizes the attention output (q_dim values) with hidden_dim weights.
  if (c.q_dim() != c.hidden_dim) fail("q_dim != hidden_dim");
  const int64_t qkv_rows = int64_t{c.q_dim()} + 2 * int64_t{c.kv_dim()};
  for (const LayerWeights& l : w.layers) {
    const auto ternary_ok = [](const TernaryMatrix& m, int64_t rows, int64_t cols) {
      return m.rows == rows && m.cols == cols && m.packed != nullptr &&
             m.row_scales.size() == static_cast<size_t>(rows);
    };
    if (!ternary_ok(l.qkv, qkv_rows, c.hidden_dim) || !ternary_ok(l.o, c.hidden_dim, c.q_dim()) ||
        !ternary_ok(l.gate_up, 2 * int64_t{c.ffn_dim}, c.hidden_dim) ||
        !ternary_ok(l.down, c.hidden_dim, c.ffn_dim)) {
      fail("ternary matrix shape");
    }
    const size_t hidden = static_cast<size_t>(c.hidden_dim);
    if (l.input_norm.size() != hidden || l.attn_sub_norm.size() != hidden ||
        l.post_attn_norm.size() != hidden ||
        l.ffn_sub_norm.size() != static_cast<size_t>(c.ffn_dim)) {
      fail("norm size");
    }
  }
  if (w.final_norm.size() != static_cast<size_t>(c.hidden_dim)) fail("final_norm size");
  const LmHead& head = w.output_head;
  if (head.rows != 0 && (head.rows != c.vocab_size || head.cols != c.hidden_dim)) {
    fail("output_head shape");
  }
  (void)model.sizes();
}

}  // namespace bitnet::fuzz
