#include "base/blob_file.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "base/thread_pool.h"
#include "bitnet/error.h"

namespace bitnet {
namespace {

constexpr char kMagic[8] = {'B', 'I', 'T', 'N', 'E', 'T', 'M', 'F'};
constexpr uint64_t kFixedHeader = 40;

uint64_t align_up(uint64_t x) {
  return (x + kBlobAlignment - 1) / kBlobAlignment * kBlobAlignment;
}

template <class T>
T read_at(std::span<const uint8_t> bytes, uint64_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

// Writes a new file in whole 2 MiB chunks at 2 MiB-aligned offsets, so the page cache holds it in
// huge folios and a later mapping of it is backed by 2 MiB pages (see MappedFile). The bytes go to
// PATH.partial, renamed over PATH once complete: a failed write leaves no truncated model behind,
// and a process that has the old file mapped keeps reading the old file.
class ChunkedFileWriter {
 public:
  explicit ChunkedFileWriter(const std::filesystem::path& path)
      : path_(path), partial_(path.string() + ".partial") {
    fd_ = ::open(partial_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(path.string() + ": cannot create: " + std::strerror(errno));
    buffer_.reserve(kChunk);
  }
  ChunkedFileWriter(const ChunkedFileWriter&) = delete;
  ChunkedFileWriter& operator=(const ChunkedFileWriter&) = delete;
  ~ChunkedFileWriter() {
    if (fd_ < 0) return;
    ::close(fd_);
    ::unlink(partial_.c_str());
  }

  void write(const void* data, uint64_t bytes) {
    const auto* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const uint64_t n = std::min<uint64_t>(bytes, kChunk - buffer_.size());
      buffer_.insert(buffer_.end(), p, p + n);
      p += n;
      bytes -= n;
      if (buffer_.size() == kChunk) flush();
    }
  }

  void finish() {
    flush();
    if (::close(std::exchange(fd_, -1)) != 0 || ::rename(partial_.c_str(), path_.c_str()) != 0) {
      const std::string reason = std::strerror(errno);
      ::unlink(partial_.c_str());
      throw Error(path_.string() + ": write failed: " + reason);
    }
  }

 private:
  static constexpr uint64_t kChunk = uint64_t{2} << 20;

  void flush() {
    size_t done = 0;
    while (done < buffer_.size()) {
      const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw Error(path_.string() + ": write failed: " +
                    (n < 0 ? std::strerror(errno) : "no progress (disk full?)"));
      done += static_cast<size_t>(n);
    }
    buffer_.clear();
  }

  std::filesystem::path path_, partial_;
  int fd_ = -1;
  std::vector<char> buffer_;
};

// Bytes hashed or copied at a time; with `release`, each such chunk's pages (of a read-only file
// mapping) are dropped once read, so a pass over a file does not leave it all resident.
constexpr size_t kReleaseChunk = size_t{32} << 20;

template <class Fn>
void for_each_chunk(std::span<const uint8_t> bytes, bool release, Fn&& fn) {
  for (size_t offset = 0; offset < bytes.size(); offset += kReleaseChunk) {
    const auto chunk = bytes.subspan(offset, std::min(kReleaseChunk, bytes.size() - offset));
    fn(chunk);
    if (release) release_pages(chunk);
  }
}

uint64_t xxh3_of(std::span<const uint8_t> bytes, bool release) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for_each_chunk(bytes, release, [&](std::span<const uint8_t> chunk) {
    XXH3_64bits_update(state, chunk.data(), chunk.size());
  });
  const uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return hash;
}

}  // namespace

void BlobFileWriter::add(const std::string& name, std::span<const uint8_t> bytes, Source source) {
  blobs_.push_back({name, bytes, source});
}

void BlobFileWriter::write(const std::filesystem::path& path, const nlohmann::json& meta,
                           ThreadPool& pool) const {
  std::vector<uint64_t> hashes(blobs_.size());
  pool.parallel_for(static_cast<int64_t>(blobs_.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      hashes[i] = xxh3_of(blobs_[i].bytes, blobs_[i].source == Source::mapped);
  });
  // Offsets depend on the header's length, which depends on the offsets: lay out relative to a
  // data start, then fix the data start once the header text is known (two passes converge
  // because the header only grows by the digits of the offsets).
  nlohmann::json header;
  uint64_t data_start = 0;
  for (int pass = 0; pass < 4; ++pass) {
    header = {{"meta", meta}, {"blobs", nlohmann::json::array()}};
    uint64_t offset = data_start;
    for (size_t i = 0; i < blobs_.size(); ++i) {
      offset = align_up(offset);
      header["blobs"].push_back({{"name", blobs_[i].name},
                                 {"offset", offset},
                                 {"bytes", blobs_[i].bytes.size()},
                                 {"xxh3", hashes[i]}});
      offset += blobs_[i].bytes.size();
    }
    const uint64_t needed = align_up(kFixedHeader + header.dump().size() + 4096);
    if (needed <= data_start) break;
    data_start = needed;
  }
  std::string text = header.dump();
  const uint64_t file_size = header["blobs"].empty()
                                 ? data_start
                                 : header["blobs"].back()["offset"].get<uint64_t>() +
                                       header["blobs"].back()["bytes"].get<uint64_t>();
  ChunkedFileWriter out(path);
  const uint32_t version = kBlobFileVersion, reserved = 0;
  const uint64_t header_bytes = text.size(), header_hash = XXH3_64bits(text.data(), text.size());
  out.write(kMagic, 8);
  out.write(&version, 4);
  out.write(&reserved, 4);
  out.write(&header_bytes, 8);
  out.write(&file_size, 8);
  out.write(&header_hash, 8);
  out.write(text.data(), text.size());
  uint64_t pos = kFixedHeader + text.size();
  const std::vector<char> zeros(data_start + kBlobAlignment, 0);
  for (size_t i = 0; i < blobs_.size(); ++i) {
    const uint64_t offset = header["blobs"][i]["offset"].get<uint64_t>();
    out.write(zeros.data(), offset - pos);
    for_each_chunk(blobs_[i].bytes, blobs_[i].source == Source::mapped,
                   [&](std::span<const uint8_t> chunk) { out.write(chunk.data(), chunk.size()); });
    pos = offset + blobs_[i].bytes.size();
  }
  out.finish();
}

bool BlobFile::has_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  return in.read(magic, 8) && std::memcmp(magic, kMagic, 8) == 0;
}

BlobFile::BlobFile(const std::filesystem::path& path) : file_(path) {
  const std::string where = path.string();
  const std::span<const uint8_t> bytes = file_.bytes();
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    throw Error(where + ": not a converted bitnet model file (bad magic)");
  }
  if (bytes.size() < kFixedHeader)
    throw Error(where + ": truncated or appended to (" + std::to_string(bytes.size()) + " bytes)");
  const uint32_t version = read_at<uint32_t>(bytes, 8);
  if (version != kBlobFileVersion) {
    throw Error(where + ": converted with format version " + std::to_string(version) +
                ", this build reads version " + std::to_string(kBlobFileVersion) +
                " (convert the model again)");
  }
  const uint64_t header_bytes = read_at<uint64_t>(bytes, 16),
                 file_size = read_at<uint64_t>(bytes, 24);
  if (file_size != bytes.size()) {
    throw Error(where + ": file is " + std::to_string(bytes.size()) + " bytes, its header says " +
                std::to_string(file_size) + " (truncated or appended to)");
  }
  if (header_bytes > bytes.size() - kFixedHeader)
    throw Error(where + ": header length exceeds the file");
  const char* text = reinterpret_cast<const char*>(bytes.data() + kFixedHeader);
  if (XXH3_64bits(text, header_bytes) != read_at<uint64_t>(bytes, 32)) {
    throw Error(where + ": header checksum mismatch (corrupted file)");
  }
  try {
    const nlohmann::json header = nlohmann::json::parse(text, text + header_bytes);
    meta_ = header.at("meta");
    for (const auto& b : header.at("blobs")) {
      const std::string name = b.at("name").get<std::string>();
      // get<uint64_t>() would wrap a negative number and convert a float out of range.
      const auto u64 = [&](const char* key) {
        const nlohmann::json& v = b.at(key);
        if (!v.is_number_unsigned()) {
          throw Error(where + ": blob '" + name + "': " + key +
                      " must be a non-negative integer, found " + v.dump());
        }
        return v.get<uint64_t>();
      };
      const uint64_t offset = u64("offset"), size = u64("bytes");
      if (offset % kBlobAlignment != 0 || offset > bytes.size() || size > bytes.size() - offset) {
        throw Error(where + ": blob '" + name + "' lies outside the file");
      }
      blobs_[name] = {bytes.subspan(offset, size), u64("xxh3")};
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed header: " + e.what());
  }
}

void BlobFile::verify(ThreadPool& pool) const {
  std::vector<const std::pair<const std::string, Entry>*> entries;
  for (const auto& entry : blobs_) entries.push_back(&entry);
  std::atomic<int64_t> bad{-1};
  pool.parallel_for(static_cast<int64_t>(entries.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Entry& e = entries[i]->second;
      // Verifying must not leave the whole file resident.
      if (xxh3_of(e.bytes, true) != e.xxh3) bad = i;
    }
  });
  if (bad >= 0) {
    throw Error(path().string() + ": checksum mismatch in blob '" + entries[bad]->first +
                "' (corrupted file)");
  }
}

std::span<const uint8_t> BlobFile::blob(const std::string& name, uint64_t expected_bytes) const {
  auto it = blobs_.find(name);
  if (it == blobs_.end()) throw Error(path().string() + ": blob '" + name + "' is missing");
  if (it->second.bytes.size() != expected_bytes) {
    throw Error(path().string() + ": blob '" + name + "' has " +
                std::to_string(it->second.bytes.size()) + " bytes, expected " +
                std::to_string(expected_bytes));
  }
  return it->second.bytes;
}

std::string BlobFile::verified_text(const std::string& name) const {
  auto it = blobs_.find(name);
  if (it == blobs_.end()) throw Error(path().string() + ": blob '" + name + "' is missing");
  const Entry& e = it->second;
  if (XXH3_64bits(e.bytes.data(), e.bytes.size()) != e.xxh3) {
    throw Error(path().string() + ": checksum mismatch in blob '" + name + "' (corrupted file)");
  }
  return std::string(e.bytes.begin(), e.bytes.end());
}

}  // namespace bitnet
