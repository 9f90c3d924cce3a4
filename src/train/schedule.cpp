#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace pgolf::train {

ScheduleParams ScheduleParams::from(const Config& cfg) {
  ScheduleParams p;
  p.iterations = cfg.train.iterations;
  p.max_wallclock_ms = cfg.train.max_wallclock_seconds * 1000.0;
  p.warmdown_iters = cfg.train.warmdown_iters;
  p.warmdown_frac = cfg.train.warmdown_frac;
  p.min_lr = cfg.train.min_lr;
  p.by_wallclock = cfg.train.lr_schedule == "wallclock";
  p.cosine = cfg.train.warmdown_shape == "cosine";
  p.lr_warmup_steps = cfg.train.lr_warmup_steps;
  return p;
}

double training_progress(const ScheduleParams& p, int64_t step, double elapsed_ms) {
  const bool wallclock = p.by_wallclock && p.max_wallclock_ms > 0;
  const double f = wallclock ? elapsed_ms / p.max_wallclock_ms
                             : static_cast<double>(step) / static_cast<double>(std::max<int64_t>(p.iterations, 1));
  return std::clamp(f, 0.0, 1.0);
}

namespace {

// The fraction of the warm-down still ahead: 1 before it starts, 0 at its end.
double warmdown_remaining(const ScheduleParams& p, int64_t step, double elapsed_ms) {
  if (p.warmdown_frac > 0) {
    const double f = training_progress(p, step, elapsed_ms);
    return f < 1.0 - p.warmdown_frac ? 1.0 : (1.0 - f) / p.warmdown_frac;
  }
  if (p.warmdown_iters <= 0) return 1.0;
  if (!(p.by_wallclock && p.max_wallclock_ms > 0)) {
    const int64_t start = std::max<int64_t>(p.iterations - p.warmdown_iters, 0);
    if (step >= p.iterations) return 0.0;
    if (step < start) return 1.0;
    return std::max(static_cast<double>(p.iterations - step) / static_cast<double>(p.warmdown_iters), 0.0);
  }
  const double step_ms = elapsed_ms / static_cast<double>(std::max<int64_t>(step, 1));
  const double warmdown_ms = static_cast<double>(p.warmdown_iters) * step_ms;
  const double remaining_ms = std::max(p.max_wallclock_ms - elapsed_ms, 0.0);
  return remaining_ms <= warmdown_ms ? remaining_ms / std::max(warmdown_ms, 1e-9) : 1.0;
}

}  // namespace

double lr_multiplier(const ScheduleParams& p, int64_t step, double elapsed_ms) {
  const double r = std::clamp(warmdown_remaining(p, step, elapsed_ms), 0.0, 1.0);
  double m = 1.0;
  if (r < 1.0) {
    const double shaped = p.cosine ? 0.5 * (1.0 - std::cos(M_PI * r)) : r;
    m = std::max(shaped, p.min_lr);
  }
  if (p.lr_warmup_steps > 0 && step < p.lr_warmup_steps)
    m *= static_cast<double>(step + 1) / static_cast<double>(p.lr_warmup_steps);
  return m;
}

double muon_momentum_at(const OptimSection& o, int64_t step) {
  const double f = o.muon_momentum_warmup_steps > 0
                       ? std::min(static_cast<double>(step) / static_cast<double>(o.muon_momentum_warmup_steps), 1.0)
                       : 1.0;
  return (1.0 - f) * o.muon_momentum_warmup_start + f * o.muon_momentum;
}

double muon_wd_multiplier(const OptimSection& o, double progress) {
  const double start = o.muon_wd_taper_start;
  if (o.muon_wd_taper_final == 1.0 || progress < start || start >= 1.0) return 1.0;
  const double t = std::clamp((progress - start) / (1.0 - start), 0.0, 1.0);
  return 1.0 + t * (o.muon_wd_taper_final - 1.0);
}

}  // namespace pgolf::train
