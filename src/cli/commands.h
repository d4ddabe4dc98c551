#pragma once
// Each subcommand registers its flags on the app and returns the action to run if selected.

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "bitnet/model.h"

namespace bitnet::cli {

using Action = std::function<int()>;

Action add_run(CLI::App& app);
Action add_tokenize(CLI::App& app);
Action add_make_model(CLI::App& app);

// Loads a model with a progress bar on a terminal (stderr), nothing otherwise or when quiet,
// and prints the loader's warnings.
std::shared_ptr<const Model> load_model_with_progress(const std::string& path, bool quiet);

// A progress display on stderr: a redrawn bar on a terminal, a few plain lines otherwise.
class Progress {
 public:
  Progress(std::string label, bool quiet);
  void update(double fraction);
  void finish();

 private:
  std::string label_;
  bool quiet_, tty_;
  int last_percent_ = -1;
};

}  // namespace bitnet::cli
