// bitnet make-model: write a HuggingFace-format model directory with random weights.
#include <cstdio>

#include "cli/commands.h"
#include "model/make_model.h"

namespace bitnet::cli {

Action add_make_model(CLI::App& app) {
  struct Args {
    std::string out, preset = "tiny", variant = "bf16", tokenizer, scale_dtype = "f32",
                     linear_class = "autobitlinear";
    int layers = 0, max_seq_len = 0;
    uint64_t seed = 1;
    bool untied = false, quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "make-model", "Write a model directory with random weights (for tests and benchmarks)");
  cmd->add_option("-o,--output", args->out, "Directory to write")->required();
  cmd->add_option("--preset", args->preset, "Shape: tiny or 2b4t (microsoft/bitnet-b1.58-2B-4T)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tiny", "2b4t"}));
  cmd->add_option("--variant", args->variant,
                  "bf16 (master weights, quantized at load) or packed (2-bit, offline)")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "packed"}));
  cmd->add_option("--layers", args->layers, "Override the number of layers")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-seq-len", args->max_seq_len, "Override max_position_embeddings")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", args->seed, "Seed of the random weights")->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Copy tokenizer.json and tokenizer_config.json from this directory")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--scale-dtype", args->scale_dtype, "packed: weight_scale dtype")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--linear-class", args->linear_class, "packed: transformers linear class")
      ->capture_default_str()
      ->check(CLI::IsMember({"autobitlinear", "bitlinear"}));
  cmd->add_flag("--untied", args->untied, "Write a separate lm_head.weight");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress on stderr");
  return [args] {
    RandomModelSpec spec = RandomModelSpec::preset(args->preset);
    if (args->layers > 0) spec.n_layers = args->layers;
    if (args->max_seq_len > 0) spec.max_seq_len = args->max_seq_len;
    spec.variant = args->variant == "packed" ? QuantMode::offline : QuantMode::online;
    spec.scale_bf16 = args->scale_dtype == "bf16";
    spec.linear_class_bitlinear = args->linear_class == "bitlinear";
    spec.tie_word_embeddings = !args->untied;
    spec.seed = args->seed;
    Progress progress("writing " + args->out, args->quiet);
    write_random_model(args->out, spec,
                       args->tokenizer.empty()
                           ? std::nullopt
                           : std::optional<std::filesystem::path>(args->tokenizer),
                       [&](double f) { progress.update(f); });
    progress.finish();
    if (!args->quiet)
      std::fprintf(stderr, "wrote %s (random weights, %s variant)\n", args->out.c_str(),
                   args->variant.c_str());
    return 0;
  };
}

}  // namespace bitnet::cli
