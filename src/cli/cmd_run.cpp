// bitnet run: generate text from a prompt, streaming it to stdout.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"

namespace bitnet::cli {
namespace {

struct RunArgs {
  std::string model;
  std::string prompt;
  std::string prompt_file;
  int n_predict = 128;
  int64_t seed = -1;
  bool json = false;
  bool no_bos = false;
  bool quiet = false;
  SessionArgs session;
  std::vector<std::string> stop;
  SamplingParams sampling;
};

int run(const RunArgs& args) {
  std::string prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    std::ifstream in(args.prompt_file, std::ios::binary);
    if (!in) throw Error(args.prompt_file + ": cannot open prompt file");
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  const std::string model_dir = resolve_model_path(args.model).string();
  LoadOptions load_options;
  SessionOptions session_options;
  args.session.apply(load_options, session_options);
  const auto [model, tokenizer] =
      load_model_and_tokenizer(model_dir, args.quiet || args.json, load_options);
  const std::vector<int32_t> prompt_ids = tokenizer.encode(prompt, !args.no_bos);
  if (prompt_ids.empty()) throw Error("the prompt is empty (give -p TEXT, or drop --no-bos)");
  Session session(model, session_options);
  if (static_cast<int>(prompt_ids.size()) > session.context_length()) {
    throw Error("the prompt has " + std::to_string(prompt_ids.size()) +
                " tokens, more than the context of " + std::to_string(session.context_length()) +
                " (raise -c up to " + std::to_string(model->config().max_seq_len) + ")");
  }

  GenerateOptions options;
  options.max_new_tokens = args.n_predict;
  options.sampling = args.sampling;
  options.sampling.seed =
      args.seed >= 0 ? static_cast<uint64_t>(args.seed) : std::random_device{}();
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  options.stop_strings = args.stop;

  auto stream = [&](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  const GenerateResult r = generate(session, tokenizer, prompt_ids, options,
                                    args.json ? std::function<bool(const std::string&)>() : stream);
  const double prompt_tps = r.prompt_seconds > 0 ? r.prompt_ids.size() / r.prompt_seconds : 0.0;
  const double gen_tps =
      r.gen_seconds > 0 && r.gen_tokens_timed > 0 ? r.gen_tokens_timed / r.gen_seconds : 0.0;
  if (args.json) {
    nlohmann::json out = {
        {"prompt_ids", r.prompt_ids},
        {"ids", r.ids},
        {"text", r.text},
        {"finish_reason", r.finish_reason == FinishReason::stop ? "stop" : "length"},
        {"n_prompt", r.prompt_ids.size()},
        {"n_gen", r.ids.size()},
        {"prompt_tokens_per_s", prompt_tps},
        {"gen_tokens_per_s", gen_tps},
        {"seed", options.sampling.seed},
        {"device", session.device()},
        {"threads", session.n_threads()},
        {"kernels", session.kernels()},
    };
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
  }
  if (!args.quiet) {
    std::fprintf(
        stderr, "prompt: %zu tokens, %.2f tokens/s | generation: %zu tokens, %.2f tokens/s | %s\n",
        r.prompt_ids.size(), prompt_tps, r.ids.size(), gen_tps,
        session.device() == "cuda"
            ? ("CUDA, " + session.kernels()).c_str()
            : (std::to_string(session.n_threads()) + " threads, " + session.kernels() + " kernels")
                  .c_str());
  }
  return 0;
}

}  // namespace

Action add_run(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt");
  add_model_option(*cmd, args->model);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  cmd->add_option("-f,--file", args->prompt_file, "Read the prompt from a file");
  cmd->add_option("-n,--n-predict", args->n_predict, "Maximum tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_sampling_options(*cmd, args->sampling);
  cmd->add_option("-s,--seed", args->seed, "Sampling seed (default: random)");
  cmd->add_option("--stop", args->stop, "Stop when this text is generated (repeatable)");
  add_session_options(*cmd, args->session);
  cmd->add_flag("--json", args->json, "Print one JSON object at the end instead of streaming");
  cmd->add_flag("--no-bos", args->no_bos, "Do not prepend the BOS token");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress or speed report on stderr");
  return [args] {
    args->sampling.validate();
    return run(*args);
  };
}

}  // namespace bitnet::cli
