#pragma once
// A loaded BitNet model: config plus weights packed for the kernels. Immutable once loaded,
// so one model can serve many sessions.

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitnet/config.h"

namespace bitnet {

struct LoadOptions {
  // Called as work proceeds: a stage name ("loading", "packing") and the fraction done (0..1).
  std::function<void(const std::string& stage, double fraction)> progress;
  int n_threads = 0;  // threads used for packing; 0 = physical cores
};

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

  struct Weights;  // src/model/weights.h
  const Weights& weights() const { return *weights_; }

 private:
  Model();
  ModelConfig config_;
  std::vector<std::string> warnings_;
  std::unique_ptr<Weights> weights_;
};

}  // namespace bitnet
