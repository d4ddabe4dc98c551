#pragma once
// Shared by the fuzz targets: a per-process scratch directory for parsers that read from a path,
// and the oracle for rejected inputs.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace bitnet::fuzz {

// A directory under the temp dir for the files a target writes, named per process so parallel
// fuzzing jobs (-jobs=N) do not share it; removed with its files when the process exits normally.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("bitnet_fuzz_" + std::to_string(::getpid()) + "_" + name)) {
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes (or rewrites) `file` in the directory and returns its path.
  std::filesystem::path write(const std::string& file, const uint8_t* data, size_t size) const {
    const std::filesystem::path path = path_ / file;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      std::abort();
    }
    return path;
  }

 private:
  std::filesystem::path path_;
};

// Untrusted input may be rejected, but only with an exception whose message names the file (or
// source) at fault: a bare library message (a JSON type error, std::bad_alloc) is a finding.
inline void expect_named_error(const std::exception& e, std::string_view name) {
  if (std::string_view(e.what()).find(name) == std::string_view::npos) {
    std::fprintf(stderr, "error message does not name '%.*s': %s\n", static_cast<int>(name.size()),
                 name.data(), e.what());
    std::abort();
  }
}

// A broken invariant of an accepted input.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "accepted input breaks an invariant: %s\n", what.c_str());
  std::abort();
}

}  // namespace bitnet::fuzz
