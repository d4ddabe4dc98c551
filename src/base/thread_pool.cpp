#include "base/thread_pool.h"

#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "bitnet/error.h"

namespace bitnet {
namespace {

// Ops arrive microseconds apart during decode, so workers spin briefly before sleeping.
constexpr int kSpinIterations = 20000;

inline void cpu_relax() {
  __builtin_ia32_pause();
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads) {
  if (n_threads < 1 || n_threads > 1024) {
    throw Error("thread count must be between 1 and 1024, got " + std::to_string(n_threads));
  }
  runs_ = std::vector<BlockRun>(n_threads);
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  fn(0, n_threads_);
  // Spin while workers finish (microseconds), then yield: when the machine is oversubscribed a
  // descheduled worker needs this core, and pure spinning would stall the op for a time slice.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kSpinIterations) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::split_into_runs(int64_t blocks) {
  if (blocks > int64_t{UINT32_MAX})
    throw Error("parallel_for_blocks: " + std::to_string(blocks) + " blocks, at most 2^32 - 1");
  for (int t = 0; t < n_threads_; ++t)
    runs_[t].blocks.store(pack_run(blocks * t / n_threads_, blocks * (t + 1) / n_threads_),
                          std::memory_order_relaxed);
}

std::pair<int64_t, int64_t> ThreadPool::take_front(int t) {
  std::atomic<uint64_t>& run = runs_[t].blocks;
  uint64_t blocks = run.load(std::memory_order_relaxed);
  for (;;) {
    const int64_t first = static_cast<int64_t>(blocks >> 32), last = static_cast<uint32_t>(blocks);
    if (first >= last) return {0, 0};
    const int64_t taken = std::max<int64_t>(1, (last - first) / 4);
    if (run.compare_exchange_weak(blocks, pack_run(first + taken, last), std::memory_order_relaxed))
      return {first, first + taken};
  }
}

int64_t ThreadPool::take_last_of_another(int t, int n_threads) {
  for (int i = 1; i < n_threads; ++i) {
    std::atomic<uint64_t>& run = runs_[(t + i) % n_threads].blocks;
    uint64_t blocks = run.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t first = static_cast<int64_t>(blocks >> 32);
      const int64_t last = static_cast<uint32_t>(blocks);
      if (first >= last) break;
      if (run.compare_exchange_weak(blocks, pack_run(first, last - 1), std::memory_order_relaxed))
        return last - 1;
    }
  }
  return -1;
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    uint32_t gen;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIterations) {
        cpu_relax();
      } else {
        generation_.wait(seen, std::memory_order_acquire);
      }
    }
    seen = gen;
    if (stop_.load()) return;
    (*job_)(index, n_threads_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

int physical_core_count() {
  std::set<std::pair<std::string, std::string>> cores;
  unsigned n = std::thread::hardware_concurrency();
  for (unsigned cpu = 0; cpu < n; ++cpu) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(pkg >> p) || !(core >> c)) return n > 0 ? static_cast<int>(n) : 1;
    cores.emplace(p, c);
  }
  return cores.empty() ? 1 : static_cast<int>(cores.size());
}

}  // namespace bitnet
