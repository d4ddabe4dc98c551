#pragma once
// The model's weights as the kernels read them.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/safetensors.h"
#include "bitnet/model.h"
#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {

// A floating-point matrix [rows][cols] kept in its file dtype (BF16 or F32), usually mapped.
struct DenseMatrix {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::BF16;
  const void* data = nullptr;
  std::vector<uint8_t> storage;  // owns `data` when converted at load
  // Mapped rows read one at a time (an embedding table that is not also the lm_head): each
  // read's pages are unmapped again, since the kernel maps large page-cache folios around every
  // row and unread rows would otherwise pile up as resident memory.
  bool release_rows_after_read = false;

  size_t byte_size() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
  std::span<const uint8_t> bytes() const {
    return {static_cast<const uint8_t*>(data), byte_size()};
  }
  bool mapped() const { return storage.empty(); }  // data lies in a mapped file, read-only
  void row_to_f32(int64_t r, float* out) const;
  // y[r] = W[r] . x for rows [row_begin, row_end)
  void matvec(const float* x, float* y, int64_t row_begin, int64_t row_end) const;
};

struct LayerWeights {
  std::vector<float> input_norm;      // [hidden]
  std::vector<float> attn_sub_norm;   // [hidden]  (over the attention output, q_dim == hidden)
  std::vector<float> post_attn_norm;  // [hidden]
  std::vector<float> ffn_sub_norm;    // [ffn]
  TernaryMatrix qkv;      // [q_dim + 2 kv_dim][hidden]: q_proj, k_proj, v_proj rows fused
  TernaryMatrix o;        // [hidden][q_dim]
  TernaryMatrix gate_up;  // [2 ffn][hidden]: gate_proj rows then up_proj rows
  TernaryMatrix down;     // [hidden][ffn]
};

struct Model::Weights {
  std::vector<std::shared_ptr<const void>> keep_alive;  // mapped files the matrices point into
  DenseMatrix embed;                                    // [vocab][hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  DenseMatrix lm_head_own;        // used when the model has an untied lm_head.weight
  bool lm_head_tied = true;
  // What the forward pass multiplies by (LoadOptions::lm_head): a view of the checkpoint's bf16
  // head, or a quantized copy (the embedding lookup keeps reading the exact rows of `embed`).
  // Unset (rows == 0) when the checkpoint's head is not bf16: then lm_head() is used as is.
  LmHead output_head;

  // The checkpoint's head matrix.
  const DenseMatrix& lm_head() const { return lm_head_tied ? embed : lm_head_own; }
};

}  // namespace bitnet
