#include "base/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/cpu_features.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"

namespace bitnet {
namespace {

// Larger than this machine class's last-level caches (up to a few hundred MB), so passes
// measure DRAM.
constexpr size_t kBufferBytes = size_t{1} << 30;

using Line = uint64_t __attribute__((vector_size(64)));  // one cache line

// Reads with the widest loads the CPU has, as the kernels do (scalar loads cannot saturate a
// memory channel from one core).
BITNET_CLONE_PER_ISA uint64_t sum_lines(const Line* p, size_t n) {
  Line a{}, b{}, c{}, d{};  // independent chains so the adds never bound the loop
  for (size_t i = 0; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  const Line all = a + b + c + d;
  uint64_t sum = 0;
  for (int i = 0; i < 8; ++i) sum += all[i];
  return sum;
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe()
    // 2 MiB pages, as the mapped weights get (MappedFile): 4 KiB pages read measurably slower.
    : buffer_(kBufferBytes, ZeroedBuffer::Pages::huge) {
  // One write per 4 KiB page makes every page resident: read untouched, they would all map the
  // one zero page and be read from cache.
  for (size_t i = 0; i < kBufferBytes; i += 4096) buffer_.data()[i] = 1;
}

ReadBandwidth ReadBandwidthProbe::measure(ThreadPool& pool, double seconds) {
  const auto* lines = reinterpret_cast<const Line*>(buffer_.data());
  const size_t n_lines = kBufferBytes / sizeof(Line);
  ReadBandwidth result;
  double total_seconds = 0;
  std::vector<uint64_t> sinks(static_cast<size_t>(pool.size()));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int passes = 0;
  for (; passes < 2 || std::chrono::steady_clock::now() < deadline; ++passes) {
    const auto start = std::chrono::steady_clock::now();
    pool.run([&](int t, int nt) {
      const size_t begin = n_lines * t / nt, end = n_lines * (t + 1) / nt;
      sinks[t] += sum_lines(lines + begin, end - begin);
    });
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    total_seconds += elapsed;
    result.best_pass =
        std::max(result.best_pass, static_cast<double>(kBufferBytes) / elapsed / 1e9);
  }
  result.sustained = static_cast<double>(kBufferBytes) * passes / total_seconds / 1e9;
  // The sums keep the reads from being optimized away.
  volatile uint64_t sink = 0;
  for (uint64_t s : sinks) sink = sink + s;
  return result;
}

}  // namespace bitnet
