#pragma once
// Read-only memory map of a whole file. Model files are mapped, never read into heap copies.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace bitnet {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws bitnet::Error naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bitnet
