// Fuzzes loading a converted .bitnet file: BlobFile's fixed header and JSON header, the meta and
// its config_json, the weight blobs (load_converted_weights) and the tokenizer blobs.
//
// The file's checksums would stop nearly every mutation at the first check, so before loading,
// this harness rewrites the mutated input as a writer would: every blob entry's "xxh3" is set to
// the hash of the bytes it names, then the header length, file size and header checksum fields.
// The product's checks stay as they are; they are exercised by the unit tests.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitnet/model.h"
#include "bitnet/tokenizer.h"
#include "fuzz_common.h"
#include "fuzz_model.h"

using namespace bitnet;
using nlohmann::json;

// libFuzzer's own mutator, for the custom one below.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

constexpr size_t kFixedHeader = 40;  // magic, version, reserved, header bytes, size, checksum

uint64_t load_u64(const std::vector<uint8_t>& file, size_t at) {
  uint64_t v;
  std::memcpy(&v, file.data() + at, 8);
  return v;
}

void store_u64(std::vector<uint8_t>& file, size_t at, uint64_t v) {
  std::memcpy(file.data() + at, &v, 8);
}

std::vector<uint8_t> with_valid_checksums(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  if (size < kFixedHeader || std::memcmp(data, "BITNETMF", 8) != 0) return file;
  uint64_t header_bytes = load_u64(file, 16);
  if (header_bytes > size - kFixedHeader) return file;
  // Blob hashes change the header's text, whose new length may overlap a blob: a second round
  // hashes the file as it now is.
  for (int round = 0; round < 2; ++round) {
    const char* text = reinterpret_cast<const char*>(file.data() + kFixedHeader);
    json header = json::parse(text, text + header_bytes, nullptr, /*allow_exceptions=*/false);
    if (!header.is_object() || !header.contains("blobs") || !header["blobs"].is_array()) break;
    for (json& blob : header["blobs"]) {
      if (!blob.is_object() || !blob.contains("offset") || !blob.contains("bytes")) continue;
      const json &offset = blob["offset"], &bytes = blob["bytes"];
      if (!offset.is_number_unsigned() || !bytes.is_number_unsigned()) continue;
      const uint64_t o = offset.get<uint64_t>(), n = bytes.get<uint64_t>();
      if (o > file.size() || n > file.size() - o) continue;
      blob["xxh3"] = XXH3_64bits(file.data() + o, n);
    }
    const std::string fixed = header.dump();
    if (fixed.size() == header_bytes && std::memcmp(text, fixed.data(), fixed.size()) == 0) break;
    if (kFixedHeader + fixed.size() > file.size()) file.resize(kFixedHeader + fixed.size());
    std::memcpy(file.data() + kFixedHeader, fixed.data(), fixed.size());
    header_bytes = fixed.size();
  }
  store_u64(file, 16, header_bytes);
  store_u64(file, 24, file.size());
  store_u64(file, 32, XXH3_64bits(file.data() + kFixedHeader, header_bytes));
  return file;
}

// Most of a .bitnet file is blob bytes, which the rewritten checksums make uninteresting: most
// mutations go to the JSON header instead, or to the config.json text inside its meta. The new
// header is written where the old one was, so the blobs keep their offsets (the writer leaves
// room after the header).
size_t mutate_header(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  std::vector<uint8_t> file(data, data + size);
  const uint64_t header_bytes = load_u64(file, 16);
  if (header_bytes > size - kFixedHeader) return 0;
  std::string text(reinterpret_cast<const char*>(data) + kFixedHeader, header_bytes);
  json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (seed % 3 == 0 && header.is_object() && header.contains("meta") &&
      header["meta"].is_object() && header["meta"].contains("config_json") &&
      header["meta"]["config_json"].is_string()) {
    std::string config = header["meta"]["config_json"].get<std::string>();
    const size_t n = config.size();
    config.resize(n + 64);
    config.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(config.data()), n, config.size()));
    header["meta"]["config_json"] = config;
    text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  } else {
    const size_t n = text.size();
    text.resize(n + 64);
    text.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(text.data()), n, text.size()));
  }
  if (kFixedHeader + text.size() > file.size()) file.resize(kFixedHeader + text.size());
  std::memcpy(file.data() + kFixedHeader, text.data(), text.size());
  store_u64(file, 16, text.size());
  if (file.size() > max_size) return 0;
  std::memcpy(data, file.data(), file.size());
  return file.size();
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  if (seed % 4 != 0 && size >= kFixedHeader && std::memcmp(data, "BITNETMF", 8) == 0) {
    if (const size_t n = mutate_header(data, size, max_size, seed / 4)) return n;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const test::TempDir dir;
  const std::vector<uint8_t> fixed = with_valid_checksums(data, size);
  const std::filesystem::path file = dir / "model.bitnet";
  fuzz::write_input(file, fixed.data(), fixed.size());
  const std::string name = file.string();
  try {
    LoadOptions options;
    options.n_threads = 1;
    fuzz::check_weights(*Model::load(file, options));
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, name);
  }
  try {
    const Tokenizer tokenizer = Tokenizer::load(file);
    (void)tokenizer.encode("Hello world");
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, name);
  }
  return 0;
}
