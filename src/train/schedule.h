#pragma once
// The learning-rate multiplier shared by every optimizer group (TECHNIQUES.md §4.4, §6.6), the Muon
// momentum warm-up (§6.1) and the Muon weight-decay taper (§6.4). Pure functions of (step, elapsed
// training time): easy to test, and a resumed run computes the same values as an uninterrupted one.
#include <cstdint>

#include "train/config.h"

namespace pgolf::train {

struct ScheduleParams {
  int64_t iterations = 20000;
  double max_wallclock_ms = 600000;  // <= 0: no cap
  int64_t warmdown_iters = 1200;
  double warmdown_frac = 0;          // > 0 selects WARMDOWN_FRAC
  double min_lr = 0;                 // floor of the warm-down multiplier
  bool by_wallclock = true;          // lr_schedule = wallclock | step
  bool cosine = false;               // warmdown_shape = cosine
  int64_t lr_warmup_steps = 0;

  static ScheduleParams from(const Config& cfg);
};

// Training progress in [0, 1]: elapsed / cap with lr_schedule = wallclock and a cap, else
// step / iterations.
double training_progress(const ScheduleParams& p, int64_t step, double elapsed_ms);

// Multiplier for the step about to run (`step` optimizer steps done, `elapsed_ms` of training time).
// First the fraction r of the warm-down still ahead (1 before the warm-down, 0 at its end):
//  * warmdown_frac w > 0: f = training_progress; r = 1 while f < 1 - w, then (1 - f) / w.
//  * wallclock with a cap (baseline): W_ms = warmdown_iters * elapsed_ms / max(step, 1);
//    r = remaining_ms / W_ms once remaining_ms <= W_ms, else 1.
//  * step (or no cap): r = (iterations - step) / warmdown_iters over the last warmdown_iters steps.
// Then the shape: linear r, or cosine 0.5 (1 + cos(pi (1 - r))); floored at min_lr once the
// warm-down has started. Finally, with lr_warmup_steps = N > 0, steps s < N are scaled by (s + 1) / N.
double lr_multiplier(const ScheduleParams& p, int64_t step, double elapsed_ms);

// Muon momentum: (1 - f) start + f end with f = min(step / warmup_steps, 1).
double muon_momentum_at(const OptimSection& o, int64_t step);

// Muon weight-decay multiplier at training progress f (§6.4 taper, R:2026-04-18): 1 while
// f < muon_wd_taper_start, then linear to muon_wd_taper_final at f = 1.
double muon_wd_multiplier(const OptimSection& o, double progress);

}  // namespace pgolf::train
