// Flags shared by several subcommands.
#include "bitnet/model_path.h"
#include "cli/commands.h"

namespace bitnet::cli {

CLI::Option* add_model_option(CLI::App& cmd, std::string& model) {
  return cmd.add_option("-m,--model", model,
                        std::string("Model directory or HuggingFace repo id (default: ") +
                            kDefaultModelRepo + " from the HuggingFace cache)");
}

void add_sampling_options(CLI::App& cmd, SamplingParams& sampling) {
  cmd.add_option("--temp", sampling.temperature, "Temperature; 0 is greedy")->capture_default_str();
  cmd.add_option("--top-k", sampling.top_k, "Top-k; 0 disables")->capture_default_str();
  cmd.add_option("--top-p", sampling.top_p, "Top-p; 1 disables")->capture_default_str();
  cmd.add_option("--min-p", sampling.min_p, "Min-p; 0 disables")->capture_default_str();
  cmd.add_option("--repeat-penalty", sampling.repeat_penalty, "Repetition penalty; 1 disables")
      ->capture_default_str();
  cmd.add_option("--repeat-last-n", sampling.repeat_last_n, "Tokens the penalty looks back")
      ->capture_default_str();
}

}  // namespace bitnet::cli
