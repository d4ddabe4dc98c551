#pragma once
// A short probe of the machine's memory read bandwidth, so benchmark figures can be read as a
// fraction of what the hardware allows.

#include "base/mapped_file.h"

namespace bitnet {

class ThreadPool;

// GB/s (1e9 bytes per second) of a plain read loop.
struct ReadBandwidth {
  // All bytes read over all passes' time: what a loop streaming for that long averages, the
  // figure to set against a benchmark's mean tokens/s (this machine class's memory speed drifts
  // between passes).
  double sustained = 0;
  double best_pass = 0;  // the fastest single pass
};

// Reads a buffer much larger than the last-level cache with every thread of a pool (each its
// own slice), pass after pass for about `seconds` (at least two passes). The buffer is allocated
// and faulted in once, so that short probes can be interleaved with a benchmark's repetitions.
class ReadBandwidthProbe {
 public:
  ReadBandwidthProbe();
  ReadBandwidth measure(ThreadPool& pool, double seconds = 1.0);

 private:
  ZeroedBuffer buffer_;
};

}  // namespace bitnet
