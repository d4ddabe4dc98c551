// The two non-ternary memory streams of decoding, at the BitNet 2B-4T shape.
//
//   lm_head/<format>/threads:<t>   the 128256 x 2560 head times one hidden state; GB/s of the
//     head's storage (codes + scales). Calls rotate over copies (> 420 MB in all) so the head
//     comes from DRAM, not from the large shared L3.
//   lm_head_batch/int8/inputs:<n>/threads:<t>   the int8 head times n hidden states (batched
//     decode), in 64-row blocks as CpuForward applies it; GMAC/s and GB/s.
//   attention/<kv type>/ctx:<n>/threads:<t>   one layer of decode attention (20 query heads over
//     5 KV heads, head_dim 128) at context n; GB/s of KV cache read. Calls rotate over layers of
//     a cache of > 420 MB.
//
// Run: bitnet_bench --benchmark_filter='lm_head|attention'

#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <vector>

#include "base/float16.h"
#include "base/thread_pool.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/lm_head.h"
#include "model/kv_cache.h"

namespace bitnet {
namespace {

constexpr int64_t kVocab = 128256, kHidden = 2560;
constexpr int kHeads = 20, kKvHeads = 5, kHeadDim = 128;
constexpr uint64_t kRotationBytes = uint64_t{420} << 20;

ThreadPool& pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// Copies of a random head in `format`, enough of them to exceed kRotationBytes.
const std::vector<LmHead>& heads(LmHeadFormat format) {
  static std::vector<uint16_t> bf16;
  static std::map<LmHeadFormat, std::vector<LmHead>> made;
  auto& copies = made[format];
  if (!copies.empty()) return copies;
  if (bf16.empty()) {
    const auto values = random_floats(static_cast<size_t>(kVocab * kHidden), 1, 0.02f);
    bf16.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) bf16[i] = f32_to_bf16(values[i]);
  }
  LmHead head = LmHead::view_bf16(bf16.data(), kVocab, kHidden);
  if (format != LmHeadFormat::bf16) {
    head = LmHead::allocate(format, kVocab, kHidden);
    pool(2).parallel_for(kVocab, 256, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(kHidden);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t k = 0; k < kHidden; ++k) row[k] = bf16_to_f32(bf16[r * kHidden + k]);
        head.set_row(r, row.data());
      }
    });
  }
  const uint64_t n = (kRotationBytes + head.bytes() - 1) / head.bytes();
  copies.assign(n, head);
  return copies;
}

void bench_lm_head(benchmark::State& state, LmHeadFormat format) {
  const auto& copies = heads(format);
  ThreadPool& threads = pool(static_cast<int>(state.range(0)));
  const CpuIsa isa = CpuFeatures::host().best_isa();
  const auto x = random_floats(kHidden, 2, 1.0f);
  std::vector<float> y(kVocab);
  size_t next = 0;
  LmHeadInput in;
  for (auto _ : state) {
    const LmHead& head = copies[next++ % copies.size()];
    head.prepare(x.data(), in);
    threads.parallel_for(kVocab, 64,
                         [&](int64_t b, int64_t e) { head.matvec(isa, in, y.data(), b, e); });
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(
      static_cast<double>(copies[0].bytes()) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}

void bench_lm_head_batch(benchmark::State& state) {
  const auto& copies = heads(LmHeadFormat::int8);
  const int64_t n_inputs = state.range(0);
  ThreadPool& threads = pool(static_cast<int>(state.range(1)));
  const CpuIsa isa = CpuFeatures::host().best_isa();
  std::vector<LmHeadInput> ins(n_inputs);
  std::vector<float> y(n_inputs * kVocab);
  size_t next = 0;
  for (auto _ : state) {
    const LmHead& head = copies[next++ % copies.size()];
    for (int64_t n = 0; n < n_inputs; ++n)
      head.prepare(random_floats(kHidden, 10 + static_cast<uint32_t>(n), 1.0f).data(), ins[n]);
    threads.parallel_for_blocks(kVocab, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; block += 64)
        head.matvec(isa, ins, y.data(), kVocab, block, std::min(end, block + 64));
    });
    benchmark::DoNotOptimize(y.data());
  }
  const double calls = static_cast<double>(state.iterations());
  state.counters["GMAC/s"] = benchmark::Counter(
      static_cast<double>(kVocab * kHidden * n_inputs) * calls / 1e9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(copies[0].bytes()) * calls / 1e9,
                                              benchmark::Counter::kIsRate);
}

// A cache of n_pos positions over enough layers to exceed kRotationBytes, filled with random
// keys and values (a few distinct vectors, cycled).
struct RotatingCache {
  int n_layers;
  std::unique_ptr<KvCache> kv;
};

const RotatingCache& cache(KvCacheType type, int n_pos) {
  static std::map<std::pair<KvCacheType, int>, RotatingCache> made;
  RotatingCache& c = made[{type, n_pos}];
  if (c.kv) return c;
  ModelConfig config;
  config.n_kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.n_layers = 1;
  const uint64_t layer_bytes = KvCache(config, 1, n_pos, type).bytes();
  config.n_layers =
      static_cast<int>(std::max<uint64_t>(30, (kRotationBytes + layer_bytes - 1) / layer_bytes));
  c.n_layers = config.n_layers;
  c.kv = std::make_unique<KvCache>(config, 1, n_pos, type);
  constexpr int kDistinct = 61;
  const auto k = random_floats(kDistinct * kKvHeads * kHeadDim, 3, 1.0f);
  const auto v = random_floats(kDistinct * kKvHeads * kHeadDim, 4, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int p = 0; p < n_pos; ++p) {
      const size_t at = static_cast<size_t>((l + p) % kDistinct) * kKvHeads * kHeadDim;
      c.kv->write(0, l, p, k.data() + at, v.data() + at);
    }
  }
  return c;
}

void bench_attention(benchmark::State& state, KvCacheType type) {
  const int n_pos = static_cast<int>(state.range(0));
  const RotatingCache& c = cache(type, n_pos);
  ThreadPool& threads = pool(static_cast<int>(state.range(1)));
  const AttentionKernel kernel = attention_kernel(CpuFeatures::host().best_isa(), kHeadDim);
  const int group = kHeads / kKvHeads;
  const auto q = random_floats(kHeads * kHeadDim, 5, 1.0f);
  std::vector<float> out(kHeads * kHeadDim);
  std::vector<std::vector<float>> scratch(
      threads.size(), std::vector<float>(attention_scratch_floats(group, n_pos)));
  int layer = 0;
  for (auto _ : state) {
    // As CpuForward::attention: one item per KV head, its query heads together.
    threads.run([&](int t, int nt) {
      for (int kvh = kKvHeads * t / nt; kvh < kKvHeads * (t + 1) / nt; ++kvh) {
        const int64_t first_q = static_cast<int64_t>(kvh) * group * kHeadDim;
        kernel(c.kv->head(0, layer, kvh), n_pos, q.data() + first_q, group, out.data() + first_q,
               scratch[t].data());
      }
    });
    layer = (layer + 1) % c.n_layers;
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = static_cast<double>(c.kv->bytes()) / c.n_layers;
  state.counters["GB/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(bench_lm_head, bf16, LmHeadFormat::bf16)
    ->Name("lm_head/bf16")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_lm_head, int8, LmHeadFormat::int8)
    ->Name("lm_head/int8")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_lm_head, q4, LmHeadFormat::q4)
    ->Name("lm_head/q4")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK(bench_lm_head_batch)
    ->Name("lm_head_batch/int8")
    ->ArgNames({"inputs", "threads"})
    ->ArgsProduct({{2, 4, 8}, {1, 2}})
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, f32, KvCacheType::f32)
    ->Name("attention/f32")
    ->ArgNames({"ctx", "threads"})
    ->ArgsProduct({{1024, 4096}, {1, 2}})
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, f16, KvCacheType::f16)
    ->Name("attention/f16")
    ->ArgNames({"ctx", "threads"})
    ->ArgsProduct({{1024, 4096}, {1, 2}})
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, q8, KvCacheType::q8)
    ->Name("attention/q8")
    ->ArgNames({"ctx", "threads"})
    ->ArgsProduct({{1024, 4096}, {1, 2}})
    ->UseRealTime();

}  // namespace
}  // namespace bitnet
