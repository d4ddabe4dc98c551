#include "model/weights.h"

namespace bitnet {
namespace {

uint64_t ternary_bytes(const TernaryMatrix& m) {
  return static_cast<uint64_t>(m.bytes()) + m.row_scales.size() * sizeof(float);
}

}  // namespace

Model::Sizes Model::sizes() const {
  const ModelConfig& c = config_;
  Sizes s;
  for (const LayerWeights& l : weights_->layers) {
    s.ternary += ternary_bytes(l.qkv) + ternary_bytes(l.o) + ternary_bytes(l.gate_up) +
                 ternary_bytes(l.down);
    s.norms += (l.input_norm.size() + l.attn_sub_norm.size() + l.post_attn_norm.size() +
                l.ffn_sub_norm.size()) *
               sizeof(float);
  }
  s.norms += weights_->final_norm.size() * sizeof(float);
  s.embedding = weights_->embed.byte_size();
  const LmHead& head = weights_->output_head;
  const bool reads_checkpoint = head.rows == 0 || head.format == LmHeadFormat::bf16;
  s.lm_head = reads_checkpoint ? weights_->lm_head().byte_size() : head.bytes();
  s.lm_head_is_embedding = reads_checkpoint && weights_->lm_head_tied;
  const int64_t per_layer = static_cast<int64_t>(c.hidden_dim) * (c.q_dim() + 2 * c.kv_dim()) +
                            static_cast<int64_t>(c.q_dim()) * c.hidden_dim +
                            3LL * c.hidden_dim * c.ffn_dim + 3LL * c.hidden_dim + c.ffn_dim;
  s.n_params =
      per_layer * c.n_layers +
      static_cast<int64_t>(c.vocab_size) * c.hidden_dim * (weights_->lm_head_tied ? 1 : 2) +
      c.hidden_dim;
  return s;
}

}  // namespace bitnet
