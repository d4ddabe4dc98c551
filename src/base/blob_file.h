#pragma once
// The container of converted model files (.bitnet): named, aligned, checksummed blobs behind a
// versioned header, mapped read-only so loading is a page-cache hit, not a copy.
//
//   offset 0   magic "BITNETMF" (8 bytes)
//          8   u32 format version (kBlobFileVersion)
//         12   u32 reserved (0)
//         16   u64 header bytes H (the JSON that follows)
//         24   u64 total file size
//         32   u64 XXH3-64 of the JSON header
//         40   H bytes of JSON: {"meta": {...}, "blobs": [{"name", "offset", "bytes", "xxh3"}]}
//   then blobs, each starting at a multiple of kBlobAlignment.

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "base/mapped_file.h"

namespace bitnet {

inline constexpr uint32_t kBlobFileVersion = 2;
inline constexpr uint64_t kBlobAlignment = 64;  // a cache line: SIMD loads never straddle two

class ThreadPool;

class BlobFileWriter {
 public:
  // Where a blob's bytes lie: in memory, or in a read-only file mapping, whose pages write() drops
  // once read (they stay in the page cache) so that writing does not leave them all resident.
  enum class Source { memory, mapped };
  // Blobs are referenced, not copied: their bytes must stay valid until write() returns, which
  // lays them out and computes the checksums.
  void add(const std::string& name, std::span<const uint8_t> bytes, Source source = Source::memory);
  template <class T>
  void add(const std::string& name, std::span<const T> values) {
    add(name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()),
                                       values.size_bytes()));
  }
  void write(const std::filesystem::path& path, const nlohmann::json& meta, ThreadPool& pool) const;

 private:
  struct Blob {
    std::string name;
    std::span<const uint8_t> bytes;
    Source source;
  };
  std::vector<Blob> blobs_;
};

class BlobFile {
 public:
  // Maps the file and checks magic, version, size, the header's checksum and that every blob
  // lies inside the file. Throws bitnet::Error naming the file and what is wrong.
  explicit BlobFile(const std::filesystem::path& path);
  // Checks every blob's checksum, in parallel on the pool.
  void verify(ThreadPool& pool) const;

  const nlohmann::json& meta() const { return meta_; }
  // Throws when the blob is absent or its size is not expected_bytes.
  std::span<const uint8_t> blob(const std::string& name, uint64_t expected_bytes) const;
  // A blob of any size, its checksum checked on the spot (for blobs read without verify()).
  std::string verified_text(const std::string& name) const;
  const std::filesystem::path& path() const { return file_.path(); }

  static bool has_magic(const std::filesystem::path& path);

 private:
  MappedFile file_;
  nlohmann::json meta_;
  struct Entry {
    std::span<const uint8_t> bytes;
    uint64_t xxh3;
  };
  std::map<std::string, Entry> blobs_;
};

}  // namespace bitnet
