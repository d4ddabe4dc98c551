// Fuzzes loading a HuggingFace model directory: config.json and model.safetensors, whose tensors
// the loader checks against the config, quantizes or unpacks, and packs for the kernels. Seeds of
// both published variants (bf16 master weights, packed 2-bit weights with weight_scale) reach
// both of its paths.
//
// An input is config.json's text, a NUL byte, then model.safetensors. Most mutations go to the
// two JSON texts (the config, and the safetensors header, whose length field is kept true); the
// tensor data is left to libFuzzer's own mutations.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bitnet/model.h"
#include "fuzz_common.h"
#include "fuzz_model.h"

using namespace bitnet;

// libFuzzer's own mutator, for the custom one below.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

struct Parts {
  std::string config;
  std::vector<uint8_t> safetensors;
};

Parts split(const uint8_t* data, size_t size) {
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t config_size = nul ? static_cast<size_t>(nul - data) : size;
  Parts parts{std::string(reinterpret_cast<const char*>(data), config_size), {}};
  if (nul) parts.safetensors.assign(nul + 1, data + size);
  return parts;
}

// Lets libFuzzer's mutator edit `text`, which may grow by up to 64 bytes.
void mutate_text(std::string& text) {
  const size_t n = text.size();
  text.resize(n + 64);
  text.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(text.data()), n, text.size()));
}

// The safetensors JSON header, rewritten with its u64 length; the data section follows it
// unchanged (tensor offsets count from the data section's start).
bool mutate_safetensors_header(std::vector<uint8_t>& file) {
  if (file.size() < 8) return false;
  uint64_t header_bytes;
  std::memcpy(&header_bytes, file.data(), 8);
  if (header_bytes > file.size() - 8) return false;
  std::string header(reinterpret_cast<const char*>(file.data()) + 8, header_bytes);
  mutate_text(header);
  std::vector<uint8_t> out(8);
  const uint64_t new_bytes = header.size();
  std::memcpy(out.data(), &new_bytes, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), file.begin() + 8 + static_cast<std::ptrdiff_t>(header_bytes), file.end());
  file = std::move(out);
  return true;
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  if (seed % 4 == 0 || std::memchr(data, 0, size) == nullptr) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  Parts parts = split(data, size);
  if (seed % 4 == 1) {
    mutate_text(parts.config);
    parts.config.erase(std::remove(parts.config.begin(), parts.config.end(), '\0'),
                       parts.config.end());
  } else if (!mutate_safetensors_header(parts.safetensors)) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  const size_t total = parts.config.size() + 1 + parts.safetensors.size();
  if (total > max_size) return LLVMFuzzerMutate(data, size, max_size);
  // std::copy, not memcpy: either part may be empty, and an empty vector's data() may be null.
  uint8_t* end = std::copy(parts.config.begin(), parts.config.end(), data);
  *end++ = 0;
  std::copy(parts.safetensors.begin(), parts.safetensors.end(), end);
  return total;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const test::TempDir dir;
  const Parts parts = split(data, size);
  fuzz::write_input(dir / "config.json", reinterpret_cast<const uint8_t*>(parts.config.data()),
                    parts.config.size());
  fuzz::write_input(dir / "model.safetensors", parts.safetensors.data(), parts.safetensors.size());
  try {
    LoadOptions options;
    options.n_threads = 1;
    fuzz::check_weights(*Model::load(dir.path(), options));
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, dir.path().string());
  }
  return 0;
}
