#pragma once
// Shared by the fuzz targets: writing an input for parsers that read from a path, and the oracle
// for rejected inputs.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "../temp_dir.h"

namespace bitnet::fuzz {

// Writes a fuzz input to `path` (in a test::TempDir), stopping the run if it cannot.
inline void write_input(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
}

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
