#pragma once
// Op-level profiler for benchmarks (`pgolf bench step`, train.profile_steps). Off by default and then
// free: a Scope costs one branch. When on, a Scope brackets the work it encloses with two CUDA events
// on the current stream (wall clock on the CPU), and collect() waits for the device once and folds the
// intervals into per-label totals. Scopes may nest; each label is timed on its own, so nested labels
// are reported inside their parent's time, not next to it.
//
// Not for CUDA-graph capture (events are recorded outside any graph) and not thread-safe: profile one
// training thread.
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::prof {

bool enabled();
void set_enabled(bool on);

class Scope {
 public:
  explicit Scope(const char* label) { if (enabled()) begin(label); }
  Scope(const char* prefix, const std::string& label) { if (enabled()) begin(std::string(prefix) + label); }
  ~Scope() { if (index_ >= 0) end(); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void begin(std::string label);
  void end();
  int index_ = -1;
  uint64_t generation_ = 0;  // collect()/reset() start a new one; older scopes end silently
};

struct Row {
  std::string label;
  double ms = 0;      // total over every interval collected since reset()
  int64_t calls = 0;
};

// Waits for the device, adds the pending intervals to the totals; returns the totals, largest first.
std::vector<Row> collect();
void reset();  // drops totals and pending intervals
// A text table of `rows` with each row's share of `denominator_ms` (e.g. the profiled steps' wall time).
std::string table(const std::vector<Row>& rows, double denominator_ms, int64_t steps);

}  // namespace pgolf::prof
