// bitnet bench: prompt-processing and generation speed, llama-bench style, with the bytes each
// generated token reads and the fraction of the machine's measured read bandwidth.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>

#include "base/bandwidth.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "bitnet/session.h"
#include "cli/commands.h"
#include "model/forward_cpu.h"
#include "model/forward_cuda.h"
#include "model/weights.h"

namespace bitnet::cli {
namespace {

struct BenchArgs {
  std::string model;
  std::vector<int> n_prompt = {512};
  std::vector<int> n_gen = {128};
  std::vector<int> threads;
  std::vector<int> depth = {0};
  std::vector<int> batch;  // parallel sequences for batched decode (CUDA)
  int repetitions = 5;
  std::string device = "auto";
  std::string output = "md";
  std::string kernels = "auto";
  FormatArgs formats;
  bool no_probe = false;
};

struct Stats {
  double mean = 0, stddev = 0;
};

Stats stats(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

double seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct TestResult {
  std::string test;
  int n_prompt, n_gen, n_depth, threads;  // threads 0: the GPU
  int batch;                              // sequences decoding together
  Stats tokens_per_s;
  double bytes_per_token;  // for generation; 0 for prompt processing (compute-bound)
  std::vector<double> samples;
  // CPU generation: per repetition, the mean of the read probes run just before and just after
  // it (GB/s), as the machine's bandwidth drifts over a run.
  std::vector<double> paired_read_gbps;

  // The achieved read rate over the bandwidth measured next to it: per repetition against its
  // paired probe where there is one, else the mean rate against `probe_gbps`.
  double fraction_of(double probe_gbps) const {
    if (paired_read_gbps.empty()) return bytes_per_token * tokens_per_s.mean / 1e9 / probe_gbps;
    double sum = 0;
    for (size_t i = 0; i < samples.size(); ++i)
      sum += bytes_per_token * samples[i] / 1e9 / paired_read_gbps[i];
    return sum / static_cast<double>(samples.size());
  }
};

// Seconds of each read probe paired with a generation repetition.
constexpr double kPairedProbeSeconds = 0.3;

// b sequences decode together, one token each per step: each gets a prompt of max(depth, 1)
// random tokens, then n greedy steps of the whole batch are timed. Reports the aggregate rate.
// run(batch, first_row, next) is one forward pass writing the greedy tokens of the batch rows
// [first_row, batch size) to next.
template <class Run>
TestResult batched_decode(int b, int depth, int n, int threads, int repetitions,
                          const std::function<std::vector<int32_t>(int)>& random_tokens,
                          double weight_bytes, double kv_bytes_per_position, Run&& run) {
  const int prompt = std::max(depth, 1);
  std::vector<int32_t> next(static_cast<size_t>(b));
  std::vector<BatchToken> batch;
  for (int s = 0; s < b; ++s) {
    const auto ids = random_tokens(prompt);
    batch.clear();
    for (int i = 0; i < prompt; ++i) batch.push_back({ids[static_cast<size_t>(i)], i, s});
    run(batch, prompt - 1, &next[static_cast<size_t>(s)]);
  }
  const std::vector<int32_t> first = next;
  TestResult r{
      "tg" + std::to_string(n) + " x" + std::to_string(b), 0, n, depth, threads, b, {}, 0, {}, {}};
  const double avg_positions = prompt + (n + 1) / 2.0;
  r.bytes_per_token = (weight_bytes + b * avg_positions * kv_bytes_per_position) / b;
  for (int rep = -1; rep < repetitions; ++rep) {  // rep -1 warms up (and captures a CUDA graph)
    next = first;
    const auto start = std::chrono::steady_clock::now();
    for (int step = 0; step < n; ++step) {
      batch.clear();
      for (int s = 0; s < b; ++s) batch.push_back({next[static_cast<size_t>(s)], prompt + step, s});
      run(batch, 0, next.data());
    }
    if (rep >= 0) r.samples.push_back(static_cast<double>(b) * n / seconds(start));
  }
  r.tokens_per_s = stats(r.samples);
  return r;
}

// The CPU forward pass that bitnet serve --parallel b runs, on t threads.
TestResult cpu_batched_decode(const std::shared_ptr<const Model>& model, CpuIsa isa,
                              KvCacheType kv_type, int b, int depth, int n, int t, int repetitions,
                              const std::function<std::vector<int32_t>(int)>& random_tokens,
                              double weight_bytes) {
  const ModelConfig& c = model->config();
  const int prompt = std::max(depth, 1), ctx = prompt + n + 1;
  ThreadPool pool(t);
  KvCache kv(c, b, ctx, kv_type);
  CpuForward forward(model, pool, isa, std::max(b, prompt), ctx);
  std::vector<float> logits(static_cast<size_t>(b) * c.vocab_size);
  std::vector<int32_t> rows;
  return batched_decode(
      b, depth, n, t, repetitions, random_tokens, weight_bytes,
      static_cast<double>(kv.bytes_per_position()),
      [&](std::span<const BatchToken> batch, int first_row, int32_t* next) {
        rows.resize(batch.size() - static_cast<size_t>(first_row));
        std::iota(rows.begin(), rows.end(), first_row);
        forward.forward(kv, batch, rows, logits.data());
        for (size_t i = 0; i < rows.size(); ++i)
          next[i] = argmax(std::span<const float>(logits).subspan(i * c.vocab_size, c.vocab_size));
      });
}

#if BITNET_HAVE_CUDA
TestResult cuda_batched_decode(const std::shared_ptr<const Model>& model, int b, int depth, int n,
                               int repetitions,
                               const std::function<std::vector<int32_t>(int)>& random_tokens) {
  const int prompt = std::max(depth, 1);
  CudaForward forward(model, std::max(b, prompt), prompt + n + 1, b);
  return batched_decode(b, depth, n, 0, repetitions, random_tokens,
                        static_cast<double>(forward.weight_bytes_per_token()),
                        static_cast<double>(forward.kv_bytes_per_position()),
                        [&](std::span<const BatchToken> batch, int first_row, int32_t* next) {
                          forward.forward(batch, first_row, nullptr, next);
                        });
}
#endif

int bench(BenchArgs args) {
  args.model = resolve_model_path(args.model).string();
  LoadOptions load_options;
  SessionOptions session_defaults;
  args.formats.apply(load_options, session_defaults);
  Progress progress("loading " + args.model, args.output != "md");
  load_options.progress = [&](const std::string&, double f) { progress.update(f); };
  auto model = Model::load(args.model, load_options);
  progress.finish();
  const ModelConfig& c = model->config();
  const Model::Sizes sizes = model->sizes();
  // What the model holds: a converted file keeps the formats it was written with.
  const Model::Weights& weights = model->weights();
  const std::string ternary =
      weights.layers.empty() ? "-" : format_name(weights.layers[0].qkv.format);
  const std::string lm_head =
      weights.output_head.rows > 0 ? format_name(weights.output_head.format) : "bf16";

  std::mt19937 rng(1234);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));
    return ids;
  };

  const bool cuda = resolve_device(args.device) == "cuda";
  std::vector<int> threads = args.threads;
  if (cuda) threads = {0};  // one GPU run; -t does not apply
  if (threads.empty()) threads.push_back(physical_core_count());
  int max_ctx = 1;
  for (int d : args.depth)
    for (int p : args.n_prompt) max_ctx = std::max(max_ctx, d + p);
  for (int d : args.depth)
    for (int g : args.n_gen) max_ctx = std::max(max_ctx, d + g);
  if (max_ctx > c.max_seq_len)
    throw Error("depth + tokens = " + std::to_string(max_ctx) + " exceeds the model's context " +
                std::to_string(c.max_seq_len));

  // Per thread count: the CPU probe's sustained read rate (against which tokens/s, a mean over
  // repetitions, are set) and its best pass; a GPU's copy bandwidth.
  std::map<int, ReadBandwidth> bandwidth;
  std::string kernels_used;
  std::vector<TestResult> results;
  for (int t : threads) {
    std::optional<ReadBandwidthProbe> probe;
    std::optional<ThreadPool> probe_pool;
    if (!args.no_probe) {
#if BITNET_HAVE_CUDA
      if (cuda) bandwidth[t].sustained = bandwidth[t].best_pass = cuda_copy_bandwidth_gbps();
#endif
      if (!cuda) {
        probe.emplace();
        probe_pool.emplace(t);
        bandwidth[t] = probe->measure(*probe_pool);
      }
    }
    SessionOptions options;
    options.device = cuda ? "cuda" : "cpu";
    options.n_threads = t;
    options.context_length = max_ctx;
    options.kernels = args.kernels;
    options.kv_cache = session_defaults.kv_cache;
    Session session(model, options);
    kernels_used = session.kernels();
    for (int depth : args.depth) {
      const std::vector<int32_t> context =
          depth > 0 ? random_tokens(depth) : std::vector<int32_t>();
      auto fill_context = [&] {
        session.rewind(0);
        if (!context.empty()) session.feed(context);
      };
      for (int n : args.n_prompt) {
        if (n <= 0) continue;
        TestResult r{"pp" + std::to_string(n), n, 0, depth, t, 1, {}, 0, {}, {}};
        const auto prompt = random_tokens(n);
        fill_context();
        session.feed(prompt);  // warm-up
        for (int rep = 0; rep < args.repetitions; ++rep) {
          fill_context();
          const auto start = std::chrono::steady_clock::now();
          session.feed(prompt);
          r.samples.push_back(n / seconds(start));
        }
        r.tokens_per_s = stats(r.samples);
        results.push_back(r);
      }
      for (int n : args.n_gen) {
        if (n <= 0) continue;
        TestResult r{"tg" + std::to_string(n), 0, n, depth, t, 1, {}, 0, {}, {}};
        // Per token: every weight byte once, one embedding row, and the cache up to the
        // average position.
        const double avg_positions = depth + (n + 1) / 2.0;
        r.bytes_per_token = static_cast<double>(session.weight_bytes_per_token()) +
                            avg_positions * static_cast<double>(session.kv_bytes_per_position());
        const int32_t first = random_tokens(1)[0];
        // Read probes run between repetitions; each repetition is set against the two around it.
        auto probe_now = [&] { return probe->measure(*probe_pool, kPairedProbeSeconds).sustained; };
        double probe_before = 0;
        for (int rep = -1; rep < args.repetitions; ++rep) {  // rep -1 warms up
          if (rep == 0 && probe) probe_before = probe_now();
          fill_context();
          // Greedy generation: each token is the argmax of the previous step.
          int32_t next = first;
          const auto start = std::chrono::steady_clock::now();
          for (int i = 0; i < n; ++i)
            next = session.feed_greedy(std::span<const int32_t>(&next, 1));
          if (rep < 0) continue;
          r.samples.push_back(n / seconds(start));
          if (probe) {
            const double probe_after = probe_now();
            r.paired_read_gbps.push_back((probe_before + probe_after) / 2);
            probe_before = probe_after;
          }
        }
        r.tokens_per_s = stats(r.samples);
        results.push_back(r);
      }
    }
    if (!cuda) {
      for (int b : args.batch)
        for (int depth : args.depth)
          for (int n : args.n_gen)
            if (n > 0)
              results.push_back(
                  cpu_batched_decode(model, parse_isa(session.kernels()), session_defaults.kv_cache,
                                     b, depth, n, t, args.repetitions, random_tokens,
                                     static_cast<double>(session.weight_bytes_per_token())));
    }
  }
#if BITNET_HAVE_CUDA
  if (cuda)
    for (int b : args.batch) {
      for (int depth : args.depth) {
        for (int n : args.n_gen) {
          if (n > 0)
            results.push_back(
                cuda_batched_decode(model, b, depth, n, args.repetitions, random_tokens));
        }
      }
    }
#endif

  const double model_gb = static_cast<double>(sizes.ternary + sizes.embedding + sizes.norms +
                                              (sizes.lm_head_is_embedding ? 0 : sizes.lm_head)) /
                          1e9;
  if (args.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const TestResult& r : results) {
      const double gbps = r.bytes_per_token * r.tokens_per_s.mean / 1e9;
      nlohmann::json j = {
          {"model_filename", args.model},
          {"model_size", static_cast<uint64_t>(model_gb * 1e9)},
          {"model_n_params", sizes.n_params},
          {"backend", cuda ? "CUDA" : "CPU"},
          {"cpu_kernels", kernels_used},
          {"type_k", args.formats.kv_cache},
          {"type_v", args.formats.kv_cache},
          {"lm_head", lm_head},
          {"ternary_format", ternary},
          {"n_threads", r.threads},
          {"n_batch", r.batch},
          {"n_prompt", r.n_prompt},
          {"n_gen", r.n_gen},
          {"n_depth", r.n_depth},
          {"test", r.test},
          {"avg_ts", r.tokens_per_s.mean},
          {"stddev_ts", r.tokens_per_s.stddev},
          {"samples_ts", r.samples},
          {"bytes_per_token", r.bytes_per_token},
          {"gbps", gbps},
      };
      if (bandwidth.count(r.threads)) {
        const ReadBandwidth& bw = bandwidth[r.threads];
        j["measured_read_gbps"] = bw.sustained;
        j["measured_read_best_pass_gbps"] = bw.best_pass;
        j["fraction_of_bandwidth"] = r.bytes_per_token > 0 ? r.fraction_of(bw.sustained) : 0.0;
        if (!r.paired_read_gbps.empty()) j["paired_read_gbps"] = r.paired_read_gbps;
      }
      out.push_back(j);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf(
      "model: %s | %.2f GB | %.2f B params | %s kernels | ternary %s %.0f MB | lm_head %s %.0f MB "
      "| KV %s\n",
      args.model.c_str(), model_gb, static_cast<double>(sizes.n_params) / 1e9, kernels_used.c_str(),
      ternary.c_str(), static_cast<double>(sizes.ternary) / 1e6, lm_head.c_str(),
      static_cast<double>(sizes.lm_head) / 1e6, args.formats.kv_cache.c_str());
  for (const auto& [t, bw] : bandwidth) {
    if (cuda) {
      std::printf("measured device bandwidth (device-to-device copy, read + write): %.1f GB/s\n",
                  bw.sustained);
    } else {
      std::printf("measured read bandwidth, %d thread%s: %.1f GB/s sustained (best pass %.1f)\n", t,
                  t == 1 ? "" : "s", bw.sustained, bw.best_pass);
    }
  }
  if (!cuda && !bandwidth.empty()) {
    std::printf(
        "of bandwidth: each generation repetition's GB/s over the mean of %.1f s read probes run "
        "just before and after it, averaged\n",
        kPairedProbeSeconds);
  }
  std::printf(
      "\n| threads | test | depth | t/s | MB/token | GB/s | of bandwidth "
      "|\n|---:|---|---:|---:|---:|---:|---:|\n");
  for (const TestResult& r : results) {
    const double gbps = r.bytes_per_token * r.tokens_per_s.mean / 1e9;
    std::string frac = "-", mb = "-", gb = "-";
    if (r.bytes_per_token > 0) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.0f", r.bytes_per_token / 1e6);
      mb = buf;
      std::snprintf(buf, sizeof buf, "%.1f", gbps);
      gb = buf;
      if (bandwidth.count(r.threads)) {
        std::snprintf(buf, sizeof buf, "%.0f%%",
                      100.0 * r.fraction_of(bandwidth.at(r.threads).sustained));
        frac = buf;
      }
    }
    std::printf("| %s | %s | %d | %.2f ± %.2f | %s | %s | %s |\n",
                cuda ? "cuda" : std::to_string(r.threads).c_str(), r.test.c_str(), r.n_depth,
                r.tokens_per_s.mean, r.tokens_per_s.stddev, mb.c_str(), gb.c_str(), frac.c_str());
  }
  return 0;
}

std::vector<int> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const int v = std::stoi(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      throw Error(flag + ": expected comma-separated non-negative integers, got '" + text + "'");
    }
  }
  if (out.empty()) throw Error(flag + ": empty list");
  return out;
}

}  // namespace

Action add_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto lists = std::make_shared<std::array<std::string, 5>>();
  CLI::App* cmd =
      app.add_subcommand("bench", "Measure prompt and generation speed (llama-bench style)");
  add_model_option(*cmd, args->model);
  cmd->add_option("-p,--n-prompt", (*lists)[0], "Prompt lengths, comma-separated (default 512)");
  cmd->add_option("-n,--n-gen", (*lists)[1], "Generated tokens, comma-separated (default 128)");
  cmd->add_option("-t,--threads", (*lists)[2],
                  "Thread counts, comma-separated (default: physical cores)");
  cmd->add_option("-d,--n-depth", (*lists)[3],
                  "Tokens already in the context before each test (default 0)");
  cmd->add_option("-b,--batch", (*lists)[4],
                  "Sequences decoding together, comma-separated (e.g. 8,32)");
  cmd->add_option("--device", args->device, "auto (cuda when a GPU is present), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("-r,--repetitions", args->repetitions, "Repetitions of each test")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("-o,--output", args->output, "md or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"md", "json"}));
  cmd->add_option("--kernels", args->kernels, "CPU kernels: auto, scalar, avx2, avx512")
      ->capture_default_str();
  add_format_options(*cmd, args->formats);
  cmd->add_flag("--no-probe", args->no_probe, "Skip the memory bandwidth probe");
  return [args, lists] {
    if (!(*lists)[0].empty()) args->n_prompt = parse_int_list((*lists)[0], "-p");
    if (!(*lists)[1].empty()) args->n_gen = parse_int_list((*lists)[1], "-n");
    if (!(*lists)[2].empty()) args->threads = parse_int_list((*lists)[2], "-t");
    if (!(*lists)[3].empty()) args->depth = parse_int_list((*lists)[3], "-d");
    if (!(*lists)[4].empty()) args->batch = parse_int_list((*lists)[4], "-b");
    for (int b : args->batch) {
      if (b < 1) throw Error("-b: batch sizes must be at least 1");
    }
    for (int t : args->threads) {
      if (t < 1) throw Error("-t: thread counts must be at least 1");
    }
    const auto positive = [](int n) { return n > 0; };
    if (std::ranges::none_of(args->n_prompt, positive) &&
        std::ranges::none_of(args->n_gen, positive))
      throw Error("-p and -n: nothing to measure (every prompt and generation length is 0)");
    return bench(*args);
  };
}

}  // namespace bitnet::cli
