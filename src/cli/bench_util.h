#pragma once
// Shared pieces of `pgolf bench`: timing with CUDA events, random inputs, result rows, table/JSON output.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pgolf::cli::bench {

struct Options {
  int warmup = 5;        // untimed runs first (also warms algorithm caches and scratch buffers)
  int reps = 30;         // timed runs; the median is reported
  std::string json;      // write the results here too (atomically) when not empty
};

// One measured line. `anchor_tflops` > 0 adds a "% of anchor" column (ANCHORS.md §3, PyTorch on H100).
struct Row {
  std::string name;
  double ms = 0;
  double tflops = 0;
  double anchor_tflops = 0;
  std::string note;
};

// Median milliseconds of `reps` runs of `fn` after `warmup` untimed runs. On the GPU each run is bracketed
// by events on the current stream; on the CPU (ops run synchronously there) by steady_clock.
double median_ms(const Options& o, const std::function<void()>& fn, Device dev = Device::CUDA);

// Tensor on `dev` filled with uniform values in [-1, 1) (never all zeros), from a fixed seed.
Tensor random_tensor(const Shape& s, DType dt, uint64_t seed, Device dev);
inline Tensor random_cuda(const Shape& s, DType dt, uint64_t seed) { return random_tensor(s, dt, seed, Device::CUDA); }

void print_table(const std::string& title, const std::vector<Row>& rows);
// Writes {"bench": title, "rows": [...]} to path through a temporary file and a rename.
void write_json(const std::string& path, const std::string& title, const std::vector<Row>& rows);

}  // namespace pgolf::cli::bench
