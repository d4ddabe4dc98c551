// bitnet perplexity: how well the model predicts a text, as llama.cpp's llama-perplexity
// measures it. The text is cut into chunks of -c tokens (BOS first where the tokenizer adds
// one); each chunk runs as one prompt and its second half is scored, each token by the model's
// log-probability of it given everything before it in the chunk.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"
#include "runtime/logits.h"

namespace bitnet::cli {
namespace {

struct PerplexityArgs {
  std::string model;
  std::string file;
  int context = 512;
  int max_chunks = 0;
  int n_threads = 0;
  std::string kernels = "auto";
  FormatArgs formats;
  bool quiet = false;
};

int perplexity(const PerplexityArgs& args) {
  std::ifstream in(args.file, std::ios::binary);
  if (!in) throw Error(args.file + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();

  const std::string model_dir = resolve_model_path(args.model).string();
  LoadOptions load_options;
  SessionOptions session_options;
  args.formats.apply(load_options, session_options);
  session_options.device = "cpu";
  session_options.context_length = args.context;
  session_options.n_threads = args.n_threads;
  session_options.kernels = args.kernels;
  const auto [model, tokenizer] = load_model_and_tokenizer(model_dir, args.quiet, load_options);
  if (args.context < 4 || args.context > model->config().max_seq_len) {
    throw Error("-c must be between 4 and the model's context of " +
                std::to_string(model->config().max_seq_len) + ", got " +
                std::to_string(args.context));
  }

  const std::vector<int32_t> ids = tokenizer.encode(text.str(), false);
  const std::optional<int32_t> bos = tokenizer.bos_id();
  const size_t per_chunk = static_cast<size_t>(args.context) - (bos ? 1 : 0);  // text tokens
  size_t n_chunks = ids.size() / per_chunk;
  if (args.max_chunks > 0) n_chunks = std::min(n_chunks, static_cast<size_t>(args.max_chunks));
  if (n_chunks == 0) {
    throw Error(args.file + ": " + std::to_string(ids.size()) +
                " tokens, fewer than one chunk of " + std::to_string(per_chunk) + " (lower -c)");
  }

  Session session(model, session_options);
  // Tokens [first, context - 1) predict the next one: the second half of each chunk.
  const int first = args.context / 2;
  if (!args.quiet) {
    std::fprintf(stderr, "perplexity: %zu tokens, %zu chunks of %d, scoring %d tokens each\n",
                 ids.size(), n_chunks, args.context, args.context - 1 - first);
  }
  double sum = 0, sum_squares = 0;
  size_t count = 0;
  const size_t vocab = static_cast<size_t>(model->config().vocab_size);
  Progress progress("scoring", args.quiet);
  std::vector<int32_t> chunk;
  for (size_t i = 0; i < n_chunks; ++i) {
    chunk.clear();
    if (bos) chunk.push_back(*bos);
    chunk.insert(chunk.end(), ids.begin() + static_cast<ptrdiff_t>(i * per_chunk),
                 ids.begin() + static_cast<ptrdiff_t>((i + 1) * per_chunk));
    session.rewind(0);
    // The last token is only predicted: it need not run.
    const std::span<const float> logits =
        session.feed_scoring(std::span(chunk).first(chunk.size() - 1), first);
    for (size_t t = static_cast<size_t>(first); t + 1 < chunk.size(); ++t) {
      const std::span<const float> row =
          logits.subspan((t - static_cast<size_t>(first)) * vocab, vocab);
      const double nll =
          log_sum_exp(row) - static_cast<double>(row[static_cast<size_t>(chunk[t + 1])]);
      sum += nll;
      sum_squares += nll * nll;
      ++count;
    }
    std::printf("[%zu]%.4f,", i + 1, std::exp(sum / static_cast<double>(count)));
    std::fflush(stdout);
    progress.update(static_cast<double>(i + 1) / static_cast<double>(n_chunks));
  }
  progress.finish();
  // The standard error of the mean log-likelihood, carried to the perplexity to first order.
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  const double variance = count > 1 ? (sum_squares / n - mean * mean) * n / (n - 1) : 0.0;
  const double ppl = std::exp(mean);
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f (%zu tokens)\n", ppl,
              ppl * std::sqrt(std::max(variance, 0.0) / n), count);
  return 0;
}

}  // namespace

Action add_perplexity(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity of a text file, as llama.cpp's llama-perplexity measures it (CPU)");
  add_model_option(*cmd, args->model);
  cmd->add_option("-f,--file", args->file, "Text file to score")->required();
  cmd->add_option("-c,--ctx-size", args->context, "Tokens per chunk; the second half is scored")
      ->capture_default_str();
  cmd->add_option("--chunks", args->max_chunks, "Score at most this many chunks (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", args->n_threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kernels", args->kernels, "CPU kernels: auto, scalar, avx2, avx512")
      ->capture_default_str();
  add_format_options(*cmd, args->formats);
  cmd->add_flag("-q,--quiet", args->quiet, "No progress on stderr");
  return [args] { return perplexity(*args); };
}

}  // namespace bitnet::cli
