#pragma once
// Shared test helpers: temporary directories, cached random models, running the CLI.

#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "model/make_model.h"
#include "temp_dir.h"

namespace bitnet::test {

// Writes (once per test process) a random model for the spec under a name, and returns its dir.
inline std::filesystem::path cached_model(const std::string& name, const RandomModelSpec& spec) {
  static TempDir root;
  static std::map<std::string, std::filesystem::path> made;
  auto it = made.find(name);
  if (it != made.end()) return it->second;
  const auto dir = root / name;
  write_random_model(dir, spec);
  return made[name] = dir;
}

inline RandomModelSpec tiny_spec(QuantMode variant = QuantMode::online, uint64_t seed = 1) {
  RandomModelSpec spec = RandomModelSpec::preset("tiny");
  spec.variant = variant;
  spec.seed = seed;
  return spec;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Rewrites the JSON header of a converted (.bitnet) file through edit() and sets its length and
// checksum as the writer would, so a test reaches the checks behind the checksum. The header is
// written in place: the blobs keep their offsets (the writer leaves room after the header).
inline void edit_blob_file_header(const std::filesystem::path& path,
                                  const std::function<void(nlohmann::json&)>& edit) {
  constexpr size_t kFixedHeader = 40;
  std::string file = read_file(path);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, file.data() + 16, 8);
  nlohmann::json header = nlohmann::json::parse(file.substr(kFixedHeader, header_bytes));
  edit(header);
  const std::string text = header.dump();
  file.replace(kFixedHeader, text.size(), text);
  header_bytes = text.size();
  const uint64_t hash = XXH3_64bits(text.data(), text.size());
  std::memcpy(file.data() + 16, &header_bytes, 8);
  std::memcpy(file.data() + 32, &hash, 8);
  write_file(path, file);
}

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the bitnet CLI with args (each shell-quoted here) and optional stdin text.
inline CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = "") {
  TempDir tmp;
  std::string cmd = std::string("'") + BITNET_CLI_PATH + "'";
  for (const std::string& a : args) {
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += " " + quoted + "'";
  }
  write_file(tmp / "stdin", stdin_text);
  cmd += " <'" + (tmp / "stdin").string() + "' >'" + (tmp / "stdout").string() + "' 2>'" +
         (tmp / "stderr").string() + "'";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(tmp / "stdout");
  r.err = read_file(tmp / "stderr");
  return r;
}

struct ShellResult {
  int exit_code = -1;
  std::string output;  // standard output
};

// Runs a shell command to its end and collects its standard output.
inline ShellResult shell_output(const std::string& command) {
  ShellResult r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) r.output.append(buffer, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace bitnet::test
