#pragma once
// A persistent pool: threads are created once and woken per parallel op (hundreds of ops per
// generated token, so creating threads per op would cost more than the op).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>
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

  // Splits [0, n) into blocks of `block` (the last shorter) and gives each thread an even,
  // contiguous run of them; a thread that has finished its own run takes the last blocks of
  // another's, one at a time. fn(begin, end) is called for ranges of whole blocks: a thread's
  // own in ascending order, so each core streams its rows in order, and the threads still finish
  // together when one runs slower (a VM's vCPUs drift apart, and some stretches of memory read
  // slower than others).
  template <class Fn>
  void parallel_for_blocks(int64_t n, int64_t block, Fn&& fn) {
    if (n_threads_ == 1 || n <= block) {
      if (n > 0) fn(int64_t{0}, n);
      return;
    }
    split_into_runs((n + block - 1) / block);
    run([&](int t, int n_threads) {
      for (;;) {
        auto [first, last] = take_front(t);
        if (first >= last) {
          first = take_last_of_another(t, n_threads);
          if (first < 0) return;
          last = first + 1;
        }
        fn(first * block, std::min(n, last * block));
      }
    });
  }

 private:
  // A thread's blocks not yet taken, [first, last) as first << 32 | last: its owner takes from
  // the front, a quarter of what is left at a time (so a run costs a few compare-exchanges, not
  // one per block), other threads one block at a time from the back.
  struct alignas(64) BlockRun {
    std::atomic<uint64_t> blocks;
  };
  static uint64_t pack_run(int64_t first, int64_t last) {
    return static_cast<uint64_t>(first) << 32 | static_cast<uint32_t>(last);
  }
  void split_into_runs(int64_t blocks);
  std::pair<int64_t, int64_t> take_front(int t);
  int64_t take_last_of_another(int t, int n_threads);
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::vector<BlockRun> runs_;
};

// Physical cores of this machine (hyperthread siblings counted once), at least 1.
int physical_core_count();

}  // namespace bitnet
