#pragma once
// Each subcommand registers its flags on the app and returns the action to run if selected.

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "bitnet/generate.h"
#include "bitnet/model.h"
#include "bitnet/session.h"
#include "bitnet/tokenizer.h"

namespace bitnet::cli {

using Action = std::function<int()>;

Action add_run(CLI::App& app);
Action add_tokenize(CLI::App& app);
Action add_make_model(CLI::App& app);
Action add_bench(CLI::App& app);
Action add_convert(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_loadgen(CLI::App& app);
Action add_chat(CLI::App& app);
Action add_check(CLI::App& app);
Action add_info(CLI::App& app);
Action add_demo(CLI::App& app);
Action add_perplexity(CLI::App& app);

// Adds -m/--model, optional: a model directory or a HuggingFace repo id, default
// microsoft/bitnet-b1.58-2B-4T from the HuggingFace cache (see bitnet/model_path.h).
CLI::Option* add_model_option(CLI::App& cmd, std::string& model);
// Adds run's sampling flags (--temp --top-k --top-p --min-p --repeat-penalty --presence-penalty
// --frequency-penalty --repeat-last-n).
void add_sampling_options(CLI::App& cmd, SamplingParams& sampling);

// The storage choices of a run; defaults are the library's. A converted .bitnet file carries its
// own lm_head and ternary formats.
struct FormatArgs {
  std::string lm_head;  // empty: the default, or a converted file's own
  std::string kv_cache = kv_cache_type_name(SessionOptions{}.kv_cache);
  std::string ternary;  // empty: the default, or a converted file's own
  void apply(LoadOptions& load, SessionOptions& session) const;
};
void add_format_options(CLI::App& cmd, FormatArgs& formats);

// -t, -c, --kernels and the format options of a command that runs one session.
struct SessionArgs {
  std::string device = "auto";
  int n_threads = 0;
  int context = 0;
  std::string kernels = "auto";
  FormatArgs formats;
  void apply(LoadOptions& load, SessionOptions& session) const;
};
void add_session_options(CLI::App& cmd, SessionArgs& args);

// Loads a model with a progress bar on a terminal (stderr), nothing otherwise or when quiet,
// and prints the loader's warnings.
std::shared_ptr<const Model> load_model_with_progress(const std::string& path, bool quiet,
                                                      LoadOptions options = {});

struct ModelAndTokenizer {
  std::shared_ptr<const Model> model;
  Tokenizer tokenizer;
};
// load_model_with_progress, with the tokenizer read on another thread meanwhile: the 2B-4T
// tokenizer.json (9 MB) takes about as long to read as the mapped weights of a converted file.
ModelAndTokenizer load_model_and_tokenizer(const std::string& path, bool quiet,
                                           LoadOptions options = {});

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
