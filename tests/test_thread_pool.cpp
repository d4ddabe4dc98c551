// ThreadPool: every thread index runs once per run(), many consecutive runs complete, and
// parallel_for covers [0, n) exactly once in grain-aligned ranges, parallel_for_blocks in
// block-sized ones, a free thread taking another's blocks.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "base/thread_pool.h"
#include "bitnet/error.h"

namespace bitnet {
namespace {

TEST(ThreadPool, RunCallsEveryThreadIndexOncePerCall) {
  for (int threads : {1, 2, 3, 5}) {
    SCOPED_TRACE(threads);
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    std::vector<std::atomic<int>> calls(static_cast<size_t>(threads));
    std::atomic<int> bad_count{0};
    const int runs = 50;
    for (int i = 0; i < runs; ++i) {
      pool.run([&](int index, int n) {
        if (n != threads || index < 0 || index >= threads) {
          bad_count.fetch_add(1);
          return;
        }
        calls[static_cast<size_t>(index)].fetch_add(1);
      });
      // run() returns only after every thread finished this call.
      for (int t = 0; t < threads; ++t) ASSERT_EQ(calls[static_cast<size_t>(t)].load(), i + 1) << t;
    }
    EXPECT_EQ(bad_count.load(), 0);
  }
}

TEST(ThreadPool, CallerIsThreadZero) {
  ThreadPool pool(3);
  std::thread::id zero;
  pool.run([&](int index, int) {
    if (index == 0) zero = std::this_thread::get_id();
  });
  EXPECT_EQ(zero, std::this_thread::get_id());
}

TEST(ThreadPool, ManyConsecutiveRunsComplete) {
  // A lost wake-up would hang here (the test binary's timeout catches it).
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  const int runs = 10000;
  for (int i = 0; i < runs; ++i) pool.run([&](int index, int) { total.fetch_add(index + 1); });
  EXPECT_EQ(total.load(), int64_t{runs} * 3);
}

TEST(ThreadPool, RunsAfterIdleSleepStillWake) {
  // Workers fall back to a futex wait after spinning; a later run() must wake them.
  ThreadPool pool(3);
  std::atomic<int> count{0};
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pool.run([&](int, int) { count.fetch_add(1); });
  }
  EXPECT_EQ(count.load(), 9);
}

TEST(ThreadPool, ParallelForCoversRangeOnceWithGrainAlignment) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000}) {
      for (int64_t grain : {1, 4, 16, 100}) {
        SCOPED_TRACE(::testing::Message() << threads << " threads, n " << n << ", grain " << grain);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> ranges;
        pool.parallel_for(n, grain, [&](int64_t begin, int64_t end) {
          {
            std::lock_guard<std::mutex> lock(mu);
            ranges.emplace_back(begin, end);
          }
          for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
        EXPECT_LE(ranges.size(), static_cast<size_t>(threads));
        if (n == 0) {
          EXPECT_TRUE(ranges.empty());
        }
        for (const auto& [begin, end] : ranges) {
          EXPECT_LT(begin, end);
          EXPECT_GE(begin, 0);
          EXPECT_LE(end, n);
          EXPECT_EQ(begin % grain, 0) << begin;
          EXPECT_TRUE(end % grain == 0 || end == n) << end;
        }
      }
    }
  }
}

TEST(ThreadPool, ParallelForSpreadsWorkAcrossThreads) {
  ThreadPool pool(3);
  std::atomic<int> calls{0};
  pool.parallel_for(90, 10, [&](int64_t, int64_t) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 3);
}

TEST(ThreadPool, ParallelForBlocksCoversRangeOnceInWholeBlocks) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000}) {
      for (int64_t block : {1, 4, 64, 100}) {
        SCOPED_TRACE(::testing::Message() << threads << " threads, n " << n << ", block " << block);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> calls{0};
        pool.parallel_for_blocks(n, block, [&](int64_t begin, int64_t end) {
          calls.fetch_add(1);
          EXPECT_EQ(begin % block, 0) << begin;
          EXPECT_TRUE(end > begin && (end % block == 0 || end == n)) << begin << ".." << end;
          for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
        EXPECT_LE(calls.load(), (n + block - 1) / block);
        if (threads == 1 || n <= block) {
          EXPECT_EQ(calls.load(), n > 0 ? 1 : 0);
        }
      }
    }
  }
}

TEST(ThreadPool, ParallelForBlocksStreamsOwnBlocksForwardAndTakesOthersFromTheBack) {
  // 3 threads, 30 blocks: thread t owns blocks 10t .. 10t + 9. Whatever the timing, a thread runs
  // its own blocks from the front, one after another (the caller, thread 0, from block 0), and
  // another's from the back, descending.
  ThreadPool pool(3);
  for (int round = 0; round < 50; ++round) {
    std::mutex mu;
    std::map<std::pair<std::thread::id, int64_t>, std::vector<int64_t>> runs;  // (thread, owner)
    pool.parallel_for_blocks(300, 10, [&](int64_t begin, int64_t end) {
      std::lock_guard<std::mutex> lock(mu);
      for (int64_t block = begin / 10; block < end / 10; ++block)
        runs[{std::this_thread::get_id(), block / 10}].push_back(block);
    });
    for (const auto& [key, blocks] : runs) {
      const int64_t owner = key.second;
      SCOPED_TRACE(::testing::Message() << "owner " << owner);
      const bool forward =
          blocks[0] == owner * 10 && (blocks.size() == 1 || blocks[1] == blocks[0] + 1);
      if (key.first == std::this_thread::get_id() && owner == 0) {
        ASSERT_TRUE(forward);
      }
      for (size_t i = 1; i < blocks.size(); ++i) {
        if (forward) {
          ASSERT_EQ(blocks[i], blocks[i - 1] + 1);  // the owner: every block, in order
        } else {
          ASSERT_LT(blocks[i], blocks[i - 1]);  // others: from the back (two may alternate)
        }
      }
    }
  }
}

TEST(ThreadPool, ParallelForBlocksLetsAFreeThreadTakeAnothersBlocks) {
  // Thread 0 owns blocks 0 and 1, thread 1 owns 2 and 3. Thread 0's first block waits until
  // every other block has run, which only happens if thread 1 takes block 1 from it.
  ThreadPool pool(2);
  std::atomic<int> done{0};
  pool.parallel_for_blocks(4, 1, [&](int64_t begin, int64_t end) {
    if (begin == 0) {
      while (done.load() < 3) std::this_thread::yield();
    }
    done.fetch_add(static_cast<int>(end - begin));
  });
  EXPECT_EQ(done.load(), 4);
}

TEST(ThreadPool, ParallelForBlocksRejectsMoreBlocksThanItCounts) {
  ThreadPool pool(2);
  bool called = false;
  EXPECT_THROW(
      pool.parallel_for_blocks(int64_t{1} << 33, 1, [&](int64_t, int64_t) { called = true; }),
      Error);
  EXPECT_FALSE(called);
}

TEST(ThreadPool, ConstructorRejectsBadThreadCounts) {
  EXPECT_THROW(ThreadPool(0), Error);
  EXPECT_THROW(ThreadPool(-1), Error);
  EXPECT_THROW(ThreadPool(1025), Error);
  try {
    ThreadPool pool(0);
    FAIL() << "expected bitnet::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0"), std::string::npos) << e.what();
  }
}

TEST(ThreadPool, PhysicalCoreCountIsPositive) {
  const int cores = physical_core_count();
  EXPECT_GE(cores, 1);
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0) {
    EXPECT_LE(cores, static_cast<int>(hw));
  }
}

}  // namespace
}  // namespace bitnet
