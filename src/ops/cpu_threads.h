#pragma once
// A small process-wide thread pool for the CPU op kernels (attention, cross-entropy, ...).
// One pool shared by every op: kernels hand it a range of independent work items and block until
// all are done. Size: PGOLF_CPU_THREADS if set (>= 1), else the hardware thread count.
#include <cstdint>
#include <functional>

namespace pgolf::ops::cpu {

// Threads the pool runs work on (the calling thread counts as one of them).
int num_threads();

// Calls fn(begin, end) on disjoint sub-ranges covering [0, n): up to 4 pieces per thread, each of
// at least `grain` items (the fewest worth a wake-up). Runs inline (one call fn(0, n)) when that
// leaves fewer than 2 pieces, when the pool has one thread, from inside a pool task (no nested
// parallelism) or while another thread is using the pool. The first exception thrown by fn is rethrown here after
// every piece has finished. fn must not depend on which thread runs which piece.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace pgolf::ops::cpu
