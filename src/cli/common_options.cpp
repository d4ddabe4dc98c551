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
  cmd.add_option("--presence-penalty", sampling.presence_penalty,
                 "Subtracted from the logit of every id in the penalty window; 0 disables")
      ->capture_default_str();
  cmd.add_option("--frequency-penalty", sampling.frequency_penalty,
                 "Subtracted once per occurrence in the penalty window; 0 disables")
      ->capture_default_str();
  cmd.add_option("--repeat-last-n", sampling.repeat_last_n, "Tokens the penalties look back")
      ->capture_default_str();
}

void add_format_options(CLI::App& cmd, FormatArgs& formats) {
  cmd.add_option(
      "--lm-head", formats.lm_head,
      "lm_head format: int8 (default), bf16 (exact) or q4; a converted file has its own");
  cmd.add_option("--kv-cache", formats.kv_cache, "KV cache type: f16, f32 (exact) or q8")
      ->capture_default_str();
  cmd.add_option("--ternary", formats.ternary,
                 "Ternary weight layout: t5 (1.6-bit, default) or i2 (2-bit); a converted file has "
                 "its own");
}

void FormatArgs::apply(LoadOptions& load, SessionOptions& session) const {
  if (!lm_head.empty()) load.lm_head = parse_lm_head_format(lm_head);
  if (!ternary.empty()) load.ternary = parse_ternary_format(ternary);
  session.kv_cache = parse_kv_cache_type(kv_cache);
}

void add_session_options(CLI::App& cmd, SessionArgs& args) {
  cmd.add_option("--device", args.device, "auto (cuda when a GPU is present), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd.add_option("-t,--threads", args.n_threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("-c,--ctx-size", args.context,
                 "Context length (default: the model's max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--kernels", args.kernels, "CPU kernels: auto, scalar, avx2, avx512")
      ->capture_default_str();
  add_format_options(cmd, args.formats);
}

void SessionArgs::apply(LoadOptions& load, SessionOptions& session) const {
  formats.apply(load, session);
  session.device = device;
  session.context_length = context;
  session.n_threads = n_threads;
  session.kernels = kernels;
}

}  // namespace bitnet::cli
