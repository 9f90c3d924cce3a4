#include "core/profile.h"

#include <algorithm>
#include <chrono>
#include <map>

#include <fmt/format.h>

#include "core/memory.h"
#include "core/stream.h"
#if PGOLF_CUDA
#include "core/cuda_check.h"
#endif

namespace pgolf::prof {
namespace {

struct Interval {
  std::string label;
  int start = -1, stop = -1;          // event pool slots (GPU)
  double t0 = 0, t1 = 0;              // wall clock, ms (CPU)
};

struct State {
  bool on = false;
  bool gpu = false;
  uint64_t generation = 1;
  std::vector<Interval> pending;
  std::map<std::string, Row> totals;
#if PGOLF_CUDA
  std::vector<cudaEvent_t> pool;
  size_t used = 0;
  int take() {
    if (used == pool.size()) {
      cudaEvent_t e;
      PG_CUDA_CHECK(cudaEventCreate(&e), "creating a profiler event");
      pool.push_back(e);
    }
    return static_cast<int>(used++);
  }
#endif
};

State& st() {
  static State s;
  return s;
}

double now_ms() {
  using C = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(C::now().time_since_epoch()).count();
}

}  // namespace

bool enabled() { return st().on; }
void set_enabled(bool on) {
  st().on = on;
  st().gpu = on && cuda_available();
}

void Scope::begin(std::string label) {
  State& s = st();
  Interval iv;
  iv.label = std::move(label);
#if PGOLF_CUDA
  if (s.gpu) {
    iv.start = s.take();
    PG_CUDA_CHECK(cudaEventRecord(s.pool[static_cast<size_t>(iv.start)], static_cast<cudaStream_t>(current_stream())),
                  "recording a profiler event");
  }
#endif
  if (!s.gpu) iv.t0 = now_ms();
  index_ = static_cast<int>(s.pending.size());
  generation_ = s.generation;
  s.pending.push_back(std::move(iv));
}

void Scope::end() {
  State& s = st();
  if (generation_ != s.generation) return;  // collect() or reset() ran inside the scope
  Interval& iv = s.pending[static_cast<size_t>(index_)];
#if PGOLF_CUDA
  if (s.gpu && iv.start >= 0) {
    iv.stop = s.take();
    PG_CUDA_CHECK(cudaEventRecord(s.pool[static_cast<size_t>(iv.stop)], static_cast<cudaStream_t>(current_stream())),
                  "recording a profiler event");
    return;
  }
#endif
  iv.t1 = now_ms();
}

std::vector<Row> collect() {
  State& s = st();
  device_synchronize();
  for (const Interval& iv : s.pending) {
    double ms = 0;
#if PGOLF_CUDA
    if (iv.start >= 0) {
      if (iv.stop < 0) continue;  // still open
      float f = 0;
      PG_CUDA_CHECK(cudaEventElapsedTime(&f, s.pool[static_cast<size_t>(iv.start)], s.pool[static_cast<size_t>(iv.stop)]),
                    "reading a profiler interval");
      ms = f;
    } else
#endif
    {
      if (iv.t1 <= 0) continue;
      ms = iv.t1 - iv.t0;
    }
    Row& r = s.totals[iv.label];
    r.label = iv.label;
    r.ms += ms;
    ++r.calls;
  }
  s.pending.clear();
  ++s.generation;
#if PGOLF_CUDA
  s.used = 0;
#endif
  std::vector<Row> rows;
  for (auto& [k, r] : s.totals) rows.push_back(r);
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return rows;
}

void reset() {
  State& s = st();
  s.pending.clear();
  s.totals.clear();
  ++s.generation;
#if PGOLF_CUDA
  s.used = 0;
#endif
}

std::string table(const std::vector<Row>& rows, double denominator_ms, int64_t steps) {
  const double per = steps > 0 ? static_cast<double>(steps) : 1.0;
  std::string out = fmt::format("{:<44} {:>10} {:>8} {:>7}\n", "label", "ms/step", "calls", "% step");
  for (const Row& r : rows)
    out += fmt::format("{:<44} {:>10.3f} {:>8} {:>6.1f}%\n", r.label, r.ms / per,
                       static_cast<int64_t>(static_cast<double>(r.calls) / per + 0.5),
                       denominator_ms > 0 ? 100.0 * r.ms / denominator_ms : 0.0);
  return out;
}

}  // namespace pgolf::prof
