#pragma once
// Converted model files (.bitnet): the weights already packed for the kernels, in one mapped,
// checksummed file (base/blob_file.h), so a second start does no ternarizing or repacking.

#include <filesystem>
#include <memory>
#include <string>

#include "bitnet/model.h"
#include "model/weights.h"

namespace bitnet {

class ThreadPool;

// Writes model (as loaded, with its ternary and lm_head formats) plus the tokenizer files of
// tokenizer_dir into one file.
void write_converted_model(const Model& model, const std::filesystem::path& tokenizer_dir,
                           const std::filesystem::path& out, ThreadPool& pool);

class BlobFile;

// Builds the weights from a converted file (checksums verified on the pool).
std::unique_ptr<Model::Weights> load_converted_weights(const std::shared_ptr<const BlobFile>& file,
                                                       const ModelConfig& config, ThreadPool& pool);

}  // namespace bitnet
