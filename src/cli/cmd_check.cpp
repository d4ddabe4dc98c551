// bitnet check: runs the optimized path and the plain reference path (scalar kernels, one
// thread, f32 KV cache, bf16 lm_head) on the same tokens and compares them layer by layer.
#include <cstdio>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "bitnet/tokenizer.h"
#include "cli/commands.h"
#include "runtime/path_compare.h"

namespace bitnet::cli {
namespace {

struct CheckArgs {
  std::string model;
  std::string prompt =
      "The capital of France is Paris. The quick brown fox jumps over the lazy dog, and "
      "1 + 2 = 3.";
  int n_threads = 0;
  std::string kernels = "auto";
  std::string kv_cache = "f32";
  std::string lm_head = "bf16";
  std::string ternary = "i2";
  bool quiet = false;
};

// What the optimized path must reach. With an f32 KV cache and the bf16 lm_head both paths
// compute the same numbers (the integer kernels are exact and the fp32 ops are written to
// round identically), so the bound is tight; a quantized cache or head is judged by
// correlation and agreement instead.
struct Tolerance {
  bool exact;
  double max_relative_err = 1e-3;  // of the reference's largest magnitude
  double min_correlation = 0.99;
  double min_top1_agreement = 0.9;

  std::string describe() const {
    return exact ? "max abs err <= 1e-3 x the reference's largest magnitude, at every layer and "
                   "at the logits, and top-1 agreement 100%"
                 : "hidden states and logits correlation >= 0.99 and top-1 agreement >= 90% "
                   "(a quantized KV cache or lm_head is not exact)";
  }
  bool accepts(const Deviation& d) const {
    return exact ? d.relative() <= max_relative_err : d.correlation >= min_correlation;
  }
  bool accepts_agreement(int agreements, int positions) const {
    return exact ? agreements == positions
                 : agreements >= min_top1_agreement * static_cast<double>(positions);
  }
};

CpuIsa choose_isa(const std::string& kernels) {
  const CpuFeatures& host = CpuFeatures::host();
  if (kernels == "auto") return host.best_isa();
  const CpuIsa isa = parse_isa(kernels);
  if ((isa == CpuIsa::avx512_vnni && !host.avx512_vnni) || (isa == CpuIsa::avx2 && !host.avx2))
    throw Error("kernels '" + kernels + "' are not supported by this CPU");
  return isa;
}

void print_row(const std::string& name, const Deviation& d, bool ok) {
  std::printf("  %-8s %12.4g %12.4g %12.4g %14.8f  %s\n", name.c_str(), d.max_abs_err, d.scale,
              d.relative(), d.correlation, ok ? "ok" : "FAIL");
}

int check(const CheckArgs& args) {
  const std::string model_dir = resolve_model_path(args.model).string();
  const Tokenizer tokenizer = Tokenizer::load(model_dir);
  const std::vector<int32_t> tokens = tokenizer.encode(args.prompt);
  if (tokens.empty()) throw Error("the prompt is empty: nothing to compare on");

  LoadOptions tested_load;
  tested_load.lm_head = parse_lm_head_format(args.lm_head);
  tested_load.ternary = parse_ternary_format(args.ternary);
  ForwardPath tested;
  tested.model = load_model_with_progress(model_dir, args.quiet, tested_load);
  tested.isa = choose_isa(args.kernels);
  tested.n_threads = args.n_threads > 0 ? args.n_threads : physical_core_count();
  tested.kv_cache = parse_kv_cache_type(args.kv_cache);

  ForwardPath reference;  // scalar, one thread, f32 KV, bf16 lm_head, i2 ternary
  LoadOptions reference_load;
  reference_load.lm_head = LmHeadFormat::bf16;
  reference_load.ternary = TernaryFormat::i2;
  const bool same_weights = tested_load.lm_head == reference_load.lm_head &&
                            tested_load.ternary == reference_load.ternary;
  reference.model =
      same_weights ? tested.model : load_model_with_progress(model_dir, args.quiet, reference_load);

  const Tolerance tolerance{tested.kv_cache == KvCacheType::f32 &&
                            tested_load.lm_head == LmHeadFormat::bf16};
  std::printf(
      "optimized: %s kernels, %d threads, %s KV cache, %s lm_head, %s ternary\n"
      "reference: scalar kernels, 1 thread, f32 KV cache, bf16 lm_head, i2 ternary\n"
      "tokens: %zu (one batch, logits at every position)\n\n",
      isa_name(tested.isa), tested.n_threads, kv_cache_type_name(tested.kv_cache),
      format_name(*tested_load.lm_head), format_name(*tested_load.ternary), tokens.size());

  const PathComparison cmp = compare_forward_paths(tested, reference, tokens);
  bool pass = true;
  std::printf("  %-8s %12s %12s %12s %14s\n", "layer", "max abs err", "scale", "relative",
              "correlation");
  for (size_t l = 0; l < cmp.layers.size(); ++l) {
    const bool ok = tolerance.accepts(cmp.layers[l]);
    pass = pass && ok;
    print_row(std::to_string(l), cmp.layers[l], ok);
  }
  const bool logits_ok = tolerance.accepts(cmp.logits);
  print_row("logits", cmp.logits, logits_ok);
  const bool top1_ok = tolerance.accepts_agreement(cmp.top1_agreements, cmp.positions);
  std::printf("\ntop-1 agreement: %d / %d positions (%.1f%%)  %s\n", cmp.top1_agreements,
              cmp.positions, 100.0 * cmp.top1_agreements / cmp.positions, top1_ok ? "ok" : "FAIL");
  pass = pass && logits_ok && top1_ok;
  std::printf("tolerance: %s\n%s\n", tolerance.describe().c_str(),
              pass ? "PASS: the optimized path matches the reference"
                   : "FAIL: the optimized path disagrees with the reference");
  return pass ? 0 : 1;
}

}  // namespace

Action add_check(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* cmd = app.add_subcommand(
      "check", "Compare the optimized path with the scalar reference, layer by layer");
  add_model_option(*cmd, args->model);
  cmd->add_option("-p,--prompt", args->prompt, "Text whose tokens both paths run")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->n_threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kernels", args->kernels, "CPU kernels: auto, scalar, avx2, avx512")
      ->capture_default_str();
  cmd->add_option("--kv-cache", args->kv_cache, "KV cache type: f32, f16, q8")
      ->capture_default_str();
  cmd->add_option("--lm-head", args->lm_head, "lm_head storage: bf16, int8, q4")
      ->capture_default_str();
  cmd->add_option("--ternary", args->ternary, "Ternary packing: i2, t5")->capture_default_str();
  cmd->add_flag("-q,--quiet", args->quiet, "No loading progress on stderr");
  return [args] { return check(*args); };
}

}  // namespace bitnet::cli
