#pragma once
// Read-only memory map of a whole file. Model files are mapped, never read into heap copies.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace bitnet {

// Drops this process's mapping of the whole pages inside range of a file mapping; they stay in
// the page cache and fault back in on the next read.
void release_pages(std::span<const uint8_t> range);

// v = bytes copies of value, in memory advised to take 2 MiB pages before its first write: arrays
// streamed every token (weights repacked at load) then read without TLB misses. Advice only.
void assign_in_huge_pages(std::vector<uint8_t>& v, size_t bytes, uint8_t value);
// v = a copy of data, in memory advised the same way.
void assign_in_huge_pages(std::vector<uint8_t>& v, std::span<const uint8_t> data);

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

// Zero-filled anonymous memory whose pages become resident only when written, so a buffer sized
// for the worst case (a KV cache for the whole context) costs memory in proportion to use.
class ZeroedBuffer {
 public:
  // small: 4 KiB pages, for sparse writes (one KV position per head per layer would make a whole
  // 2 MiB page resident). huge: 2 MiB pages, for buffers streamed whole, as mapped weights are.
  enum class Pages { small, huge };

  ZeroedBuffer() = default;
  explicit ZeroedBuffer(size_t bytes, Pages pages = Pages::small);
  ZeroedBuffer(ZeroedBuffer&& other) noexcept;
  ZeroedBuffer& operator=(ZeroedBuffer&& other) noexcept;
  ZeroedBuffer(const ZeroedBuffer&) = delete;
  ZeroedBuffer& operator=(const ZeroedBuffer&) = delete;
  ~ZeroedBuffer();

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A ZeroedBuffer of n values of T (trivially copyable, zero when all bytes are zero): scratch
// arrays sized for the largest batch cost memory and page faults only where a batch writes.
template <class T>
class ZeroedArray {
 public:
  ZeroedArray() = default;
  explicit ZeroedArray(size_t n) : buffer_(n * sizeof(T)) {}
  T* data() { return reinterpret_cast<T*>(buffer_.data()); }
  const T* data() const { return reinterpret_cast<const T*>(buffer_.data()); }

 private:
  ZeroedBuffer buffer_;
};

}  // namespace bitnet
