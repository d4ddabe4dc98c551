#pragma once
// A persistent pool: threads are created once and woken per parallel op (hundreds of ops per
// generated token, so creating threads per op would cost more than the op).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace bitnet {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(thread_index, n_threads) on every thread, the caller being thread 0, and returns
  // when all have finished. Not reentrant: fn must not call run().
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into one contiguous range per thread, boundaries multiples of grain, and
  // calls fn(begin, end) for each non-empty range.
  template <class Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    if (n_threads_ == 1 || n <= grain) {
      if (n > 0) fn(int64_t{0}, n);
      return;
    }
    const int64_t blocks = (n + grain - 1) / grain;
    run([&](int t, int nt) {
      int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
      int64_t begin = b0 * grain, end = std::min(n, b1 * grain);
      if (begin < end) fn(begin, end);
    });
  }

  // Splits [0, n) into chunks of `chunk` (the last shorter) that threads claim in order as they
  // finish the previous one, calling fn(begin, end) per chunk: for long ops whose threads run at
  // different speeds (a VM's vCPUs drift apart).
  template <class Fn>
  void parallel_for_chunks(int64_t n, int64_t chunk, Fn&& fn) {
    if (n_threads_ == 1 || n <= chunk) {
      for (int64_t begin = 0; begin < n; begin += chunk) fn(begin, std::min(n, begin + chunk));
      return;
    }
    std::atomic<int64_t> next{0};
    run([&](int, int) {
      for (int64_t begin; (begin = next.fetch_add(chunk, std::memory_order_relaxed)) < n;)
        fn(begin, std::min(n, begin + chunk));
    });
  }

 private:
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// Physical cores of this machine (hyperthread siblings counted once), at least 1.
int physical_core_count();

}  // namespace bitnet
