#include "bitnet/model_path.h"

#include <cstdlib>
#include <fstream>
#include <optional>
#include <vector>

#include "bitnet/error.h"

namespace bitnet {
namespace fs = std::filesystem;
namespace {

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// "ORG/NAME": two non-empty parts of the characters HuggingFace allows in repo ids.
bool is_repo_id(const std::string& spec) {
  const size_t slash = spec.find('/');
  if (slash == 0 || slash == std::string::npos || slash + 1 == spec.size() ||
      spec.find('/', slash + 1) != std::string::npos || spec[0] == '.' || spec[0] == '~') {
    return false;
  }
  for (char c : spec) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '/';
    if (!ok) return false;
  }
  return true;
}

std::string trimmed_first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

// The snapshot refs/main names, else the most recently modified one; appends each path it
// rejects to `looked`.
std::optional<fs::path> choose_snapshot(const fs::path& repo_dir,
                                        std::vector<std::string>& looked) {
  const fs::path snapshots = repo_dir / "snapshots";
  const fs::path ref = repo_dir / "refs" / "main";
  std::error_code ec;
  if (fs::is_regular_file(ref, ec)) {
    const fs::path named = snapshots / trimmed_first_line(ref);
    if (fs::is_directory(named, ec)) return named;
    looked.push_back(named.string() + " (named by " + ref.string() + "): not a directory");
  }
  std::optional<fs::path> newest;
  fs::file_time_type newest_time;
  for (const fs::directory_entry& entry : fs::directory_iterator(snapshots, ec)) {
    if (!entry.is_directory(ec)) continue;
    const fs::file_time_type time = entry.last_write_time(ec);
    if (!newest || time > newest_time) {
      newest = entry.path();
      newest_time = time;
    }
  }
  if (!newest) looked.push_back(snapshots.string() + ": no snapshot");
  return newest;
}

}  // namespace

fs::path huggingface_hub_cache() {
  if (auto dir = env("HF_HUB_CACHE")) return *dir;
  if (auto dir = env("HF_HOME")) return fs::path(*dir) / "hub";
  if (auto dir = env("XDG_CACHE_HOME")) return fs::path(*dir) / "huggingface" / "hub";
  return fs::path(env("HOME").value_or("~")) / ".cache" / "huggingface" / "hub";
}

fs::path resolve_model_path(const std::string& spec) {
  const std::string repo = spec.empty() ? kDefaultModelRepo : spec;
  std::error_code ec;
  if (!spec.empty() && fs::exists(spec, ec)) return spec;

  std::vector<std::string> looked;
  if (!spec.empty()) looked.push_back(spec + ": no such file or directory");
  if (is_repo_id(repo)) {
    const size_t slash = repo.find('/');
    const fs::path repo_dir = huggingface_hub_cache() /
                              ("models--" + repo.substr(0, slash) + "--" + repo.substr(slash + 1));
    if (!fs::is_directory(repo_dir, ec)) {
      looked.push_back(repo_dir.string() + ": not in the HuggingFace cache");
    } else if (auto snapshot = choose_snapshot(repo_dir, looked)) {
      if (fs::exists(*snapshot / "config.json", ec)) return *snapshot;
      looked.push_back(snapshot->string() + ": no config.json (an incomplete download?)");
    }
  }

  std::string message = spec.empty()
                            ? "no model given (-m) and the default model " + repo + " was not found"
                            : "model '" + spec + "' not found";
  message += "; looked at: ";
  for (size_t i = 0; i < looked.size(); ++i) message += (i ? "; " : "") + looked[i];
  if (is_repo_id(repo)) {
    message += ". Download it with: huggingface-cli download " + repo +
               " (the cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)";
  } else {
    message += ". Give a model directory or a HuggingFace repo id (ORG/NAME)";
  }
  throw Error(message);
}

}  // namespace bitnet
