// bitnet convert: pack a HuggingFace model directory once into a single .bitnet file.
#include <cstdio>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"
#include "model/converted_model.h"

namespace bitnet::cli {

Action add_convert(CLI::App& app) {
  struct Args {
    std::string model, out, ternary = format_name(LoadOptions::kDefaultTernary),
                            lm_head = format_name(LoadOptions::kDefaultLmHead);
    int threads = 0;
    bool quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Write a model directory as one converted .bitnet file (fast start)");
  cmd->add_option("model", args->model, "Model directory (HuggingFace layout) or repo id")
      ->required();
  cmd->add_option("-o,--output", args->out, "File to write, e.g. model.bitnet")->required();
  cmd->add_option("--ternary", args->ternary, "Ternary weight format: t5 (1.6 bits) or i2 (2 bits)")
      ->capture_default_str();
  cmd->add_option("--lm-head", args->lm_head, "lm_head format: int8, bf16 or q4")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("-q,--quiet", args->quiet, "No progress on stderr");
  return [args] {
    const std::filesystem::path dir = resolve_model_path(args->model);
    if (!std::filesystem::is_directory(dir))
      throw Error(dir.string() + ": convert reads a model directory");
    LoadOptions options;
    options.ternary = parse_ternary_format(args->ternary);
    options.lm_head = parse_lm_head_format(args->lm_head);
    options.n_threads = args->threads;
    auto model = load_model_with_progress(dir.string(), args->quiet, options);
    ThreadPool pool(args->threads > 0 ? args->threads : physical_core_count());
    write_converted_model(*model, dir, args->out, pool);
    if (!args->quiet) {
      std::fprintf(stderr, "wrote %s (%.2f GB, ternary %s, lm_head %s)\n", args->out.c_str(),
                   static_cast<double>(std::filesystem::file_size(args->out)) / 1e9,
                   args->ternary.c_str(), args->lm_head.c_str());
    }
    return 0;
  };
}

}  // namespace bitnet::cli
