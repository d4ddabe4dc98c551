#pragma once
// Writes HuggingFace-format BitNet model directories with random weights, byte-compatible with
// what transformers writes: tiny ones for tests, the full 2B-4T shape for benchmarks.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "bitnet/config.h"

namespace bitnet {

struct RandomModelSpec {
  int vocab_size = 512;
  int hidden_dim = 128;
  int ffn_dim = 352;
  int n_layers = 2;
  int n_heads = 4;
  int n_kv_heads = 2;
  int max_seq_len = 256;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  QuantMode variant = QuantMode::online;  // online: bf16 master weights; offline: 2-bit packed
  bool scale_bf16 = false;                // offline: weight_scale as BF16 instead of F32
  bool linear_class_bitlinear = false;  // offline: "bitlinear" (scale divides) not "autobitlinear"
  bool tie_word_embeddings = true;
  uint64_t seed = 1;

  // "tiny" (the test model) or "2b4t" (microsoft/bitnet-b1.58-2B-4T's shape).
  static RandomModelSpec preset(const std::string& name);
};

// Writes config.json, model.safetensors and tokenizer files into dir (created if needed).
// With tokenizer_dir, its tokenizer.json / tokenizer_config.json are copied (their vocabulary
// must fit vocab_size); otherwise a small test tokenizer is generated.
// The same seed gives the same master weights for both variants, so they compute the same
// function.
void write_random_model(const std::filesystem::path& dir, const RandomModelSpec& spec,
                        const std::optional<std::filesystem::path>& tokenizer_dir = std::nullopt,
                        const std::function<void(double)>& progress = {});

}  // namespace bitnet
