// Ternary matmul kernels on the BitNet 2B-4T shapes, every format x kernel this CPU has.
//
// ternary_gemv/<format>/<kernel>/<rows>x<cols>/threads:<t>
//     One token; GB/s of packed weights read. Each call uses the next of a rotating set of
//     copies of the matrix (> 400 MB in all), so the weights come from DRAM as in real decoding,
//     not from the large shared L3.
// ternary_gemm/<format>/<kernel>/<rows>x<cols>/threads:<t>
//     128 tokens (one prefill chunk); GMAC/s.
// ternary_gemm_batch<n>/<format>/<kernel>/<rows>x<cols>/threads:<t>
//     n = 4 or 8 tokens (a batched decode step); GMAC/s.
// ternary_read_bandwidth/threads:<t>
//     A plain read loop over 1 GiB, for scale: sustained GB/s and the best pass's.
// ternary_layer/<format>/<kernel>/threads:2
//     qkv + o + gate_up + down for 128 tokens; model_tok/s is prefill throughput of these
//     matmuls over 30 layers.
//
// Run: bitnet_bench --benchmark_filter=ternary

#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/bandwidth.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitnet {
namespace {

struct Shape {
  int64_t rows, cols;
};
// qkv fused, o, gate_up fused, down; k/v alone.
constexpr Shape kShapes[] = {{2560, 2560}, {640, 2560}, {13824, 2560}, {2560, 6912}, {3840, 2560}};
constexpr int64_t kRotationBytes = int64_t{420} << 20;
constexpr int64_t kPrefillTokens = 128;
constexpr int kModelLayers = 30;

ThreadPool& pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

TernaryMatrix random_matrix(TernaryFormat format, Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> trit(-1, 1);
  TernaryMatrix w = TernaryMatrix::zeros(format, shape.rows, shape.cols);
  std::vector<int8_t> t(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    for (auto& v : t) v = static_cast<int8_t>(trit(rng));
    pack_ternary_row(w, r, t);
  }
  w.row_scales.assign(static_cast<size_t>(w.rows), 0.5f);
  return w;
}

// Copies of one matrix filling kRotationBytes; cached for the most recent (format, shape).
struct Rotation {
  TernaryMatrix original;
  ZeroedBuffer copies;               // in 2 MiB pages, as the mapped weights of a converted model
  std::vector<TernaryMatrix> views;  // non-owning, into copies
};

const Rotation& rotation(TernaryFormat format, Shape shape) {
  static std::unique_ptr<Rotation> cached;
  if (cached && cached->original.format == format && cached->original.rows == shape.rows &&
      cached->original.cols == shape.cols) {
    return *cached;
  }
  cached.reset();
  auto rot = std::make_unique<Rotation>();
  rot->original = random_matrix(format, shape, 42);
  const int64_t bytes = static_cast<int64_t>(rot->original.storage.size());
  const int64_t count = (kRotationBytes + bytes - 1) / bytes;
  rot->copies = ZeroedBuffer(static_cast<size_t>(count * bytes), ZeroedBuffer::Pages::huge);
  for (int64_t i = 0; i < count; ++i) {
    std::memcpy(rot->copies.data() + i * bytes, rot->original.storage.data(),
                static_cast<size_t>(bytes));
    TernaryMatrix view;
    view.rows = shape.rows;
    view.cols = shape.cols;
    view.format = format;
    view.packed = rot->copies.data() + i * bytes;
    view.row_scales = rot->original.row_scales;
    rot->views.push_back(std::move(view));
  }
  cached = std::move(rot);
  return *cached;
}

QuantizedActs random_acts(int64_t n_tokens, int64_t cols) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  for (auto& v : x) v = d(rng);
  QuantizedActs acts;
  quantize_activations(x.data(), cols, n_tokens, cols, acts);
  return acts;
}

// The same contiguous row split as ternary_matmul, with a chosen kernel.
void run_matmul(ThreadPool& p, TernaryMatmulFn kernel, const TernaryMatrix& w,
                const QuantizedActs& acts, int64_t n_tokens, float* y) {
  p.parallel_for_blocks(w.rows, kTernaryRowBlock, [&](int64_t begin, int64_t end) {
    kernel(w, acts, n_tokens, y, w.rows, begin, end);
  });
}

void bench_gemv(benchmark::State& state, TernaryFormat format, TernaryKernel kernel, Shape shape,
                int threads) {
  const Rotation& rot = rotation(format, shape);
  const QuantizedActs acts = random_acts(1, shape.cols);
  std::vector<float> y(static_cast<size_t>(shape.rows));
  TernaryMatmulFn fn = ternary_matmul_kernel(kernel);
  ThreadPool& p = pool(threads);
  size_t next = 0;
  for (auto _ : state) {
    run_matmul(p, fn, rot.views[next], acts, 1, y.data());
    next = (next + 1) % rot.views.size();
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(rot.original.bytes());
  state.counters["GB/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void bench_gemm(benchmark::State& state, TernaryFormat format, TernaryKernel kernel, Shape shape,
                int threads, int64_t n_tokens) {
  const TernaryMatrix w = random_matrix(format, shape, 43);
  const QuantizedActs acts = random_acts(n_tokens, shape.cols);
  std::vector<float> y(static_cast<size_t>(n_tokens * shape.rows));
  TernaryMatmulFn fn = ternary_matmul_kernel(kernel);
  ThreadPool& p = pool(threads);
  for (auto _ : state) {
    run_matmul(p, fn, w, acts, n_tokens, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double macs = static_cast<double>(shape.rows * shape.cols * n_tokens);
  state.counters["GMAC/s"] = benchmark::Counter(
      macs * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void bench_layer(benchmark::State& state, TernaryFormat format, TernaryKernel kernel, int threads) {
  const Shape layer[] = {{3840, 2560}, {2560, 2560}, {13824, 2560}, {2560, 6912}};
  std::vector<TernaryMatrix> ws;
  double macs = 0;
  for (const Shape& s : layer) {
    ws.push_back(random_matrix(format, s, 44));
    macs += static_cast<double>(s.rows * s.cols * kPrefillTokens);
  }
  const QuantizedActs hidden = random_acts(kPrefillTokens, 2560);
  const QuantizedActs ffn = random_acts(kPrefillTokens, 6912);
  std::vector<float> y(static_cast<size_t>(kPrefillTokens * 13824));
  TernaryMatmulFn fn = ternary_matmul_kernel(kernel);
  ThreadPool& p = pool(threads);
  for (auto _ : state) {
    for (const TernaryMatrix& w : ws)
      run_matmul(p, fn, w, w.cols == 6912 ? ffn : hidden, kPrefillTokens, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["GMAC/s"] = benchmark::Counter(macs * iters / 1e9, benchmark::Counter::kIsRate);
  state.counters["model_tok/s"] = benchmark::Counter(
      static_cast<double>(kPrefillTokens) * iters / kModelLayers, benchmark::Counter::kIsRate);
}

// The plain read loop the GEMV's GB/s is measured against.
void bench_read_bandwidth(benchmark::State& state, int threads) {
  ReadBandwidthProbe probe;
  ReadBandwidth bandwidth;
  for (auto _ : state) bandwidth = probe.measure(pool(threads), 0.5);
  state.counters["GB/s"] = bandwidth.sustained;
  state.counters["best_pass_GB/s"] = bandwidth.best_pass;
}

void bench_quantize(benchmark::State& state, CpuIsa isa, int64_t cols) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(cols));
  for (float& v : x) v = normal(rng);
  QuantizedActs acts;
  acts.resize(1, cols);
  for (auto _ : state) {
    quantize_activation_row(x.data(), 0, acts, isa);
    benchmark::DoNotOptimize(acts.sum[0]);
  }
}

std::string shape_name(Shape s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols);
}

std::vector<TernaryKernel> timed_kernels() {
  std::vector<TernaryKernel> kernels;
  for (TernaryKernel kernel : kAllTernaryKernels) {
    // The scalar reference is far too slow to be worth timing.
    if (kernel != TernaryKernel::scalar && kernel_available(kernel)) kernels.push_back(kernel);
  }
  return kernels;
}

std::string case_name(const char* what, TernaryFormat format, TernaryKernel kernel,
                      const std::string& shape, int threads) {
  return std::string("ternary_") + what + "/" + format_name(format) + "/" + kernel_name(kernel) +
         (shape.empty() ? "" : "/" + shape) + "/threads:" + std::to_string(threads);
}

// Registered shape by shape, so consecutive GEMV cases reuse the cached rotation.
const bool registered = [] {
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(
        ("ternary_read_bandwidth/threads:" + std::to_string(threads)).c_str(), bench_read_bandwidth,
        threads)
        ->Iterations(1)
        ->UseRealTime();
  }
  for (CpuIsa isa : {CpuIsa::avx2, CpuIsa::avx512_vnni}) {
    if (!CpuFeatures::host().supports(isa)) continue;
    for (int64_t cols : {int64_t{2560}, int64_t{6912}}) {
      benchmark::RegisterBenchmark(
          ("quantize_activations/" + std::string(isa_name(isa)) + "/" + std::to_string(cols))
              .c_str(),
          bench_quantize, isa, cols);
    }
  }
  const std::vector<TernaryKernel> kernels = timed_kernels();
  for (TernaryFormat format : {TernaryFormat::i2, TernaryFormat::t5}) {
    for (Shape shape : kShapes) {
      for (TernaryKernel kernel : kernels) {
        for (int threads : {1, 2}) {
          benchmark::RegisterBenchmark(
              case_name("gemv", format, kernel, shape_name(shape), threads).c_str(), bench_gemv,
              format, kernel, shape, threads)
              ->UseRealTime()
              ->MinTime(0.3);
        }
      }
    }
  }
  for (TernaryFormat format : {TernaryFormat::i2, TernaryFormat::t5}) {
    for (TernaryKernel kernel : kernels) {
      for (Shape shape : kShapes) {
        for (int threads : {1, 2}) {
          benchmark::RegisterBenchmark(
              case_name("gemm", format, kernel, shape_name(shape), threads).c_str(), bench_gemm,
              format, kernel, shape, threads, kPrefillTokens)
              ->UseRealTime()
              ->MinTime(0.3);
          // Batched decode: a server step of 4 or 8 sequences.
          for (int64_t batch : {4, 8}) {
            const std::string name = "gemm_batch" + std::to_string(batch);
            benchmark::RegisterBenchmark(
                case_name(name.c_str(), format, kernel, shape_name(shape), threads).c_str(),
                bench_gemm, format, kernel, shape, threads, batch)
                ->UseRealTime()
                ->MinTime(0.3);
          }
        }
      }
      benchmark::RegisterBenchmark(case_name("layer", format, kernel, "", 2).c_str(), bench_layer,
                                   format, kernel, 2)
          ->UseRealTime()
          ->MinTime(0.5);
    }
  }
  return true;
}();

}  // namespace
}  // namespace bitnet

BENCHMARK_MAIN();
