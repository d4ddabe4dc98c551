#include "base/safetensors.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "bitnet/error.h"

namespace bitnet {
namespace {

using nlohmann::json;

// A header larger than this is not a model header but a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

DType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "BF16") return DType::BF16;
  if (s == "F16") return DType::F16;
  if (s == "F32") return DType::F32;
  if (s == "U8") return DType::U8;
  if (s == "I8") return DType::I8;
  if (s == "I32") return DType::I32;
  throw Error(where + ": unsupported dtype '" + s + "'");
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::F32:
      return "F32";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
    case DType::I32:
      return "I32";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::U8:
    case DType::I8:
      return 1;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TensorView::describe() const {
  return shape_string(shape) + " " + dtype_name(dtype);
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  const std::string where = path.string();
  std::span<const uint8_t> bytes = file_.bytes();
  if (bytes.size() < 8)
    throw Error(where + ": truncated safetensors file (" + std::to_string(bytes.size()) +
                " bytes, no header)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    throw Error(where + ": safetensors header length " + std::to_string(header_len) +
                " exceeds the file size " + std::to_string(bytes.size()));
  }
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<ptrdiff_t>(header_len));
  } catch (const json::exception& e) {
    throw Error(where + ": malformed safetensors header: " + e.what());
  }
  if (!header.is_object()) throw Error(where + ": safetensors header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string at = where + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      throw Error(at + ": header entry needs dtype, shape and data_offsets [begin, end]");
    }
    TensorView view;
    view.name = name;
    view.dtype = parse_dtype(entry["dtype"].get<std::string>(), at);
    view.file = &file_.path();
    // extent, the product of the non-zero dims, is bounded too: after a 0 dim, numel stays 0
    // whatever follows, but each dim must still fit the int64_t of TensorView::shape.
    uint64_t numel = 1, extent = 1;
    for (const json& d : entry["shape"]) {
      if (!d.is_number_unsigned()) throw Error(at + ": shape has a non-integer or negative dim");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && extent > std::numeric_limits<uint64_t>::max() / 16 / dim) {
        throw Error(at + ": shape is too large");
      }
      if (dim != 0) extent *= dim;
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw Error(at + ": data_offsets must be non-negative integers");
    }
    uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      throw Error(at + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                  "] outside the data section of " + std::to_string(data_size) +
                  " bytes (truncated file?)");
    }
    uint64_t expected = numel * dtype_size(view.dtype);
    if (end - begin != expected) {
      throw Error(at + ": " + view.describe() + " needs " + std::to_string(expected) +
                  " bytes, data_offsets give " + std::to_string(end - begin));
    }
    view.bytes = bytes.subspan(data_start + begin, end - begin);
    tensors_.emplace(name, std::move(view));
  }
}

TensorSet TensorSet::open_dir(const std::filesystem::path& dir) {
  TensorSet set;
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single)) {
    set.source_ = single;
    set.files_.push_back(std::make_unique<SafetensorsFile>(single));
  } else if (std::filesystem::exists(index)) {
    set.source_ = index;
    std::ifstream in(index);
    json j;
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      throw Error(index.string() + ": malformed JSON: " + e.what());
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw Error(index.string() + ": missing object 'weight_map'");
    }
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string())
        throw Error(index.string() + ": weight_map['" + name + "'] is not a string");
      const std::string shard = file.get<std::string>();
      // A plain file name in the model directory: no path, and no NUL (which would cut the
      // name short where the operating system reads it).
      if (shard.empty() || shard == "." || shard.find('/') != std::string::npos ||
          shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos) {
        throw Error(index.string() + ": weight_map['" + name +
                    "'] is not the name of a file in the model directory");
      }
      shards.insert(shard);
    }
    for (const std::string& shard : shards) {
      set.files_.push_back(std::make_unique<SafetensorsFile>(dir / shard));
    }
  } else {
    throw Error(dir.string() + ": no model.safetensors or model.safetensors.index.json");
  }
  for (const auto& file : set.files_) {
    for (const auto& [name, view] : file->tensors()) {
      if (!set.by_name_.emplace(name, &view).second) {
        throw Error(file->path().string() + ": tensor '" + name + "' appears in two shards");
      }
    }
  }
  return set;
}

const TensorView* TensorSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& TensorSet::get(const std::string& name) const {
  const TensorView* view = find(name);
  if (!view) throw Error(source_.string() + ": tensor '" + name + "' is missing");
  return *view;
}

std::vector<std::string> TensorSet::names() const {
  std::vector<std::string> out;
  for (const auto& [name, view] : by_name_) out.push_back(name);
  return out;
}

std::string TensorSet::source_name() const {
  return source_.string();
}

size_t TensorSpec::byte_size() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                       const std::function<void(size_t, std::span<uint8_t>)>& fill,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const TensorSpec& spec : specs) {
    size_t size = spec.byte_size();
    header[spec.name] = {{"dtype", dtype_name(spec.dtype)},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path.string() + ": cannot create");
  uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<uint8_t> buffer;
  for (size_t i = 0; i < specs.size(); ++i) {
    buffer.assign(specs[i].byte_size(), 0);
    fill(i, buffer);
    out.write(reinterpret_cast<const char*>(buffer.data()),
              static_cast<std::streamsize>(buffer.size()));
  }
  out.flush();
  if (!out) throw Error(path.string() + ": write failed (disk full?)");
}

}  // namespace bitnet
