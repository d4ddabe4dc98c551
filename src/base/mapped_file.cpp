#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "bitnet/error.h"

namespace bitnet {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path.string() + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(path.string() + ": cannot map: " + std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
    // Weights are streamed every token: with 2 MiB pages (page-cache folios read in under this
    // advice) the TLB stops limiting the read rate. Advice only; the kernel may decline.
    ::madvise(p, size_, MADV_HUGEPAGE);
  }
  ::close(fd);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

// madvise on the whole pages inside range. Advice only: the kernel may decline.
void advise_pages(std::span<const uint8_t> range, int advice) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(range.data()) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(range.data()) + range.size()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, advice);
}

// Allocates v's buffer for `bytes` without writing it, advised to take 2 MiB pages.
void reserve_in_huge_pages(std::vector<uint8_t>& v, size_t bytes) {
  v.reserve(bytes);
  advise_pages({v.data(), bytes}, MADV_HUGEPAGE);
}

}  // namespace

void release_pages(std::span<const uint8_t> range) {
  advise_pages(range, MADV_DONTNEED);
}

void assign_in_huge_pages(std::vector<uint8_t>& v, size_t bytes, uint8_t value) {
  reserve_in_huge_pages(v, bytes);
  v.assign(bytes, value);
}

void assign_in_huge_pages(std::vector<uint8_t>& v, std::span<const uint8_t> data) {
  reserve_in_huge_pages(v, data.size());
  v.assign(data.begin(), data.end());
}

ZeroedBuffer::ZeroedBuffer(size_t bytes, Pages pages) : size_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error("cannot allocate " + std::to_string(bytes >> 20) + " MiB: " + std::strerror(errno));
  data_ = static_cast<uint8_t*>(p);
  ::madvise(p, bytes, pages == Pages::huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

ZeroedBuffer::ZeroedBuffer(ZeroedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

ZeroedBuffer& ZeroedBuffer::operator=(ZeroedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ZeroedBuffer::~ZeroedBuffer() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace bitnet
