#pragma once
// BitNetForCausalLM hyperparameters, read explicitly from a HuggingFace config.json.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bitnet {

enum class QuantMode {
  online,   // bf16 master weights, ternarized at load (microsoft/bitnet-b1.58-2B-4T-bf16)
  offline,  // uint8 2-bit packed weights + weight_scale (microsoft/bitnet-b1.58-2B-4T)
};

struct ModelConfig {
  int vocab_size = 0;
  int hidden_dim = 0;  // hidden_size
  int ffn_dim = 0;     // intermediate_size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;     // default hidden_dim / n_heads
  int max_seq_len = 0;  // max_position_embeddings
  float rope_theta = 0;
  float rms_norm_eps = 0;
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  QuantMode quant_mode = QuantMode::online;
  // transformers' BitLinear (linear_class "bitlinear") divides the matmul output by
  // weight_scale; AutoBitLinear ("autobitlinear") multiplies it.
  bool weight_scale_divides = false;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }

  // Throws bitnet::Error naming `source` and the field at fault.
  static ModelConfig from_json(std::string_view text, const std::string& source);
  static ModelConfig load(const std::filesystem::path& model_dir);
};

}  // namespace bitnet
