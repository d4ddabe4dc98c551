#pragma once
// A loaded BitNet model: config plus weights packed for the kernels. Immutable once loaded,
// so one model can serve many sessions.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitnet/config.h"

namespace bitnet {

// How the ternary weights are packed for the kernels (src/kernels/cpu/ternary_packing.h).
enum class TernaryFormat {
  i2,  // 2 bits per weight: cheapest to unpack
  t5,  // 5 weights per byte (1.6 bits): 20% fewer bytes per token
};

// The lm_head's storage; it is the largest single matrix read per token.
enum class LmHeadFormat {
  bf16,  // as in the checkpoint: exact
  int8,  // per-row scale
  q4,    // 4-bit, per-group scale
};

struct LoadOptions {
  // Called as work proceeds: a stage name ("loading", "packing") and the fraction done (0..1).
  std::function<void(const std::string& stage, double fraction)> progress;
  int n_threads = 0;  // threads used for packing; 0 = physical cores
  // The formats a checkpoint is packed into; unset means the defaults below. A converted file
  // keeps the formats it was written with, and a format set here that differs is an error.
  std::optional<TernaryFormat> ternary;
  std::optional<LmHeadFormat> lm_head;

  // t5: it reads 20% fewer bytes and decodes faster (README, "Formats").
  static constexpr TernaryFormat kDefaultTernary = TernaryFormat::t5;
  // int8: it halves the largest matrix read per token, and its logits stay within 0.4% of the
  // logit scale of bf16's (README, "lm_head"); bf16 is the exact path.
  static constexpr LmHeadFormat kDefaultLmHead = LmHeadFormat::int8;
  TernaryFormat ternary_or_default() const { return ternary.value_or(kDefaultTernary); }
  LmHeadFormat lm_head_or_default() const { return lm_head.value_or(kDefaultLmHead); }
};

const char* format_name(TernaryFormat format);
const char* format_name(LmHeadFormat format);
// Parse "i2"/"t5" and "bf16"/"int8"/"q4"; throw bitnet::Error listing the choices.
TernaryFormat parse_ternary_format(const std::string& name);
LmHeadFormat parse_lm_head_format(const std::string& name);

class Model {
 public:
  // Loads a HuggingFace model directory (config.json + safetensors). Throws bitnet::Error naming
  // the file, tensor or field at fault.
  static std::shared_ptr<const Model> load(const std::filesystem::path& path,
                                           const LoadOptions& options = {});
  ~Model();

  const ModelConfig& config() const { return config_; }
  // Non-fatal problems found while loading (all-zero or non-finite tensors).
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Bytes of each part as stored for the kernels; the decode step reads all of `ternary` and
  // `lm_head` once per token (plus one embedding row and the KV cache).
  struct Sizes {
    uint64_t ternary = 0;               // packed ternary matrices with their scales
    uint64_t embedding = 0;             // token embedding table
    uint64_t lm_head = 0;               // what the output projection reads
    bool lm_head_is_embedding = false;  // tied and read in place: no bytes of its own
    uint64_t norms = 0;
    int64_t n_params = 0;  // as in the checkpoint (a tied head counted once)
  };
  Sizes sizes() const;

  struct Weights;  // src/model/weights.h
  const Weights& weights() const { return *weights_; }

 private:
  Model();
  ModelConfig config_;
  std::vector<std::string> warnings_;
  std::unique_ptr<Weights> weights_;
};

}  // namespace bitnet
