#pragma once
// Shared test helpers: temporary directories, cached random models, running the CLI.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "model/make_model.h"

namespace bitnet::test {

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("bitnet_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

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

}  // namespace bitnet::test
