#pragma once
// A short probe of the machine's memory read bandwidth, so benchmark figures can be read as a
// fraction of what the hardware allows.

namespace bitnet {

class ThreadPool;

// Reads a buffer much larger than the last-level cache with every thread of the pool (each its
// own slice) and returns the best of a few passes, in GB/s (1e9 bytes per second).
double measure_read_bandwidth(ThreadPool& pool, double seconds = 1.0);

}  // namespace bitnet
