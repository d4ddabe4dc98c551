#pragma once
// The CPU forward pass of BitNet b1.58 and the scratch buffers it needs.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/cpu_features.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"
#include "bitnet/model.h"
#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/ternary_matmul.h"
#include "model/kv_cache.h"

namespace bitnet {

// One token of a batch: a prompt chunk is many tokens of one slot at consecutive positions;
// batched decode is one token for each of several slots.
struct BatchToken {
  int32_t token;
  int32_t pos;
  int32_t slot;
};

// Called after each layer with the residual stream [n_tokens][hidden] (layer = n_layers for the
// final norm's input); used by `bitnet check` to compare paths layer by layer.
using LayerObserver = std::function<void(int layer, const float* hidden, int64_t n_tokens)>;

class CpuForward {
 public:
  CpuForward(std::shared_ptr<const Model> model, ThreadPool& pool, CpuIsa isa, int max_batch,
             int context_length);

  // Runs the batch (tokens must already be validated), writing its keys and values into the
  // cache, and writes logits [logit_rows.size()][vocab] for the batch indices in logit_rows.
  void forward(KvCache& kv, std::span<const BatchToken> batch, std::span<const int32_t> logit_rows,
               float* logits, const LayerObserver& observer = {});

  int max_batch() const { return max_batch_; }
  CpuIsa isa() const { return isa_; }

 private:
  void attention(KvCache& kv, int layer, std::span<const BatchToken> batch);
  // One token on several threads: attention() splits its two passes evenly and writes the
  // token's key and value into the cache itself.
  bool lone_token_attention(size_t batch_size) const { return batch_size == 1 && pool_.size() > 1; }

  std::shared_ptr<const Model> model_;
  const ModelConfig& c_;
  ThreadPool& pool_;
  CpuIsa isa_;
  int max_batch_;
  std::vector<float> rope_cos_, rope_sin_;  // [context_length][head_dim / 2]

  // Sized for max_batch tokens; only the rows a batch uses are ever touched.
  ZeroedArray<float> x_;         // [batch][hidden] residual stream
  ZeroedArray<float> xb_;        // [batch][max(hidden, ffn)] normed input to a matmul
  ZeroedArray<float> qkv_;       // [batch][q_dim + 2 kv_dim]
  ZeroedArray<float> attn_out_;  // [batch][q_dim]
  ZeroedArray<float> gate_up_;   // [batch][2 ffn]
  ZeroedArray<float> proj_;      // [batch][hidden] o_proj / down_proj output
  // Attention: up to kAttentionChunk tokens share each tile of kAttentionTileBlocks key blocks
  // (512 positions: 128 KiB of f16 keys per KV head, L2-resident).
  static constexpr int kAttentionChunk = 16;
  static constexpr int64_t kAttentionTileBlocks = 32;
  int64_t token_scores_;              // attention_scratch_floats(group, context_length)
  size_t scores_per_thread_;          // min(max_batch, kAttentionChunk) x token_scores_
  ZeroedArray<float> scores_;         // [threads][scores_per_thread_]
  ZeroedArray<float> shared_scores_;  // one token's scores, [kv_heads][group][context_length]
  QuantizedActs acts_hidden_, acts_ffn_;
  std::vector<LmHeadInput> head_inputs_;  // [batch] final-normed rows, as the lm_head reads them
};

}  // namespace bitnet
