#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <future>

#include "cli/commands.h"

namespace bitnet::cli {

Progress::Progress(std::string label, bool quiet)
    : label_(std::move(label)), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {}

void Progress::update(double fraction) {
  if (quiet_) return;
  const int percent = std::clamp(static_cast<int>(fraction * 100.0), 0, 100);
  if (percent == last_percent_) return;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%%", label_.c_str(), filled,
                 "##############################", kWidth - filled, "", percent);
  } else if (percent / 25 != last_percent_ / 25 || last_percent_ < 0) {
    std::fprintf(stderr, "%s: %d%%\n", label_.c_str(), percent);
  }
  std::fflush(stderr);
  last_percent_ = percent;
}

void Progress::finish() {
  if (quiet_) return;
  update(1.0);
  if (tty_) std::fputc('\n', stderr);
}

std::shared_ptr<const Model> load_model_with_progress(const std::string& path, bool quiet,
                                                      LoadOptions options) {
  Progress progress("loading " + path, quiet);
  options.progress = [&](const std::string&, double f) { progress.update(f); };
  auto model = Model::load(path, options);
  progress.finish();
  for (const std::string& w : model->warnings())
    std::fprintf(stderr, "bitnet: warning: %s\n", w.c_str());
  return model;
}

ModelAndTokenizer load_model_and_tokenizer(const std::string& path, bool quiet,
                                           LoadOptions options) {
  std::future<Tokenizer> tokenizer =
      std::async(std::launch::async, [&path] { return Tokenizer::load(path); });
  auto model = load_model_with_progress(path, quiet, std::move(options));
  return {std::move(model), tokenizer.get()};
}

}  // namespace bitnet::cli
