// bitnet demo: the whole pipeline with nothing downloaded: writes a small random model to a
// temporary folder, loads it, generates from a fixed prompt and removes the folder.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"
#include "model/make_model.h"

namespace bitnet::cli {
namespace {

struct DemoArgs {
  std::string prompt = "Once upon a time";
  int n_predict = 48;
  int n_threads = 0;
  int64_t seed = 1;
  bool quiet = false;
};

// The demo's folder, removed however the command ends.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "bitnet-demo-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr)
      throw Error("cannot create a temporary folder in " +
                  std::filesystem::temp_directory_path().string());
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

int demo(const DemoArgs& args) {
  RandomModelSpec spec = RandomModelSpec::preset("tiny");
  spec.hidden_dim = 256;
  spec.ffn_dim = 704;
  spec.n_layers = 4;
  spec.seed = 2024;
  ScratchDir dir;
  std::fprintf(stderr,
               "bitnet demo: writing a random BitNet model (%d layers, hidden %d, vocabulary %d) "
               "to %s.\nIts weights are random, so the text below is gibberish: this shows the "
               "pipeline runs, not what the model says.\nFor real text: huggingface-cli download "
               "%s, then bitnet chat\n",
               spec.n_layers, spec.hidden_dim, spec.vocab_size, dir.path().c_str(),
               kDefaultModelRepo);
  {
    Progress progress("writing the model", args.quiet);
    write_random_model(dir.path(), spec, std::nullopt, [&](double f) { progress.update(f); });
    progress.finish();
  }
  const Tokenizer tokenizer = Tokenizer::load(dir.path());
  auto model = load_model_with_progress(dir.path().string(), args.quiet);
  SessionOptions session_options;
  session_options.n_threads = args.n_threads;
  Session session(model, session_options);

  GenerateOptions options;
  options.max_new_tokens = args.n_predict;
  options.sampling.seed = static_cast<uint64_t>(args.seed);
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  std::printf("%s", args.prompt.c_str());
  std::fflush(stdout);
  const GenerateResult r = generate(session, tokenizer, tokenizer.encode(args.prompt), options,
                                    [](const std::string& piece) {
                                      std::fwrite(piece.data(), 1, piece.size(), stdout);
                                      std::fflush(stdout);
                                      return true;
                                    });
  std::printf("\n");
  std::fflush(stdout);
  if (!args.quiet) {
    std::fprintf(stderr,
                 "generated %zu tokens at %.1f tokens/s with %d threads, %s kernels; removing %s\n",
                 r.ids.size(),
                 r.gen_seconds > 0 ? static_cast<double>(r.gen_tokens_timed) / r.gen_seconds : 0,
                 session.n_threads(), session.kernels().c_str(), dir.path().c_str());
  }
  return 0;
}

}  // namespace

Action add_demo(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Generate from a small random model (no download; the text is gibberish)");
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text")->capture_default_str();
  cmd->add_option("-n,--n-predict", args->n_predict, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", args->n_threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-s,--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("-q,--quiet", args->quiet, "No progress or speed report on stderr");
  return [args] { return demo(*args); };
}

}  // namespace bitnet::cli
