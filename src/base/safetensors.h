#pragma once
// safetensors reading (memory-mapped, untrusted input) and writing.
// Format: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to its start.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/mapped_file.h"

namespace bitnet {

enum class DType { BF16, F16, F32, U8, I8, I32 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
  const std::filesystem::path* file;  // for error messages

  int64_t numel() const;
  std::string describe() const;  // e.g. "[6912, 2560] BF16"
};

// One .safetensors file, mapped. Validates the header, every dtype, shape and byte range.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
};

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
class TensorSet {
 public:
  static TensorSet open_dir(const std::filesystem::path& dir);

  const TensorView* find(const std::string& name) const;
  // Throws when absent: "model.safetensors: tensor 'x' is missing".
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;
  std::string source_name() const;  // the file or index the tensors came from

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
  std::filesystem::path source_;
};

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t byte_size() const;
};

// Writes specs in order; fill(i, buffer) writes tensor i's bytes into a buffer of its size.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                       const std::function<void(size_t, std::span<uint8_t>)>& fill,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace bitnet
