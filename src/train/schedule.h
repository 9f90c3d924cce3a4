#pragma once
// The learning-rate multiplier shared by every optimizer group (TECHNIQUES.md §4.4, §6.6), and the
// Muon momentum warm-up. Pure functions of (step, elapsed training time): easy to test, and a
// resumed run computes the same values as an uninterrupted one.
#include <cstdint>

#include "train/config.h"

namespace pgolf::train {

struct ScheduleParams {
  int64_t iterations = 20000;
  double max_wallclock_ms = 600000;  // <= 0: no cap
  int64_t warmdown_iters = 1200;
  double warmdown_frac = 0;          // > 0 selects WARMDOWN_FRAC
  double min_lr = 0;
  bool by_wallclock = true;          // lr_schedule = wallclock | step

  static ScheduleParams from(const Config& cfg);
};

// Multiplier for the step about to run (`step` optimizer steps done, `elapsed_ms` of training time).
//  * wallclock (baseline): W_ms = warmdown_iters * elapsed_ms / max(step, 1); multiplier =
//    remaining_ms / W_ms once remaining_ms <= W_ms, else 1.
//  * step (or no wallclock cap): linear to 0 over the last warmdown_iters of `iterations`.
//  * warmdown_frac w > 0: f = progress in [0, 1] (time- or step-based); 1 while f < 1 - w, then
//    max((1 - f) / w, min_lr).
double lr_multiplier(const ScheduleParams& p, int64_t step, double elapsed_ms);

// Muon momentum: (1 - f) start + f end with f = min(step / warmup_steps, 1).
double muon_momentum_at(const OptimSection& o, int64_t step);

}  // namespace pgolf::train
