#include "train/schedule.h"

#include <algorithm>

namespace pgolf::train {

ScheduleParams ScheduleParams::from(const Config& cfg) {
  ScheduleParams p;
  p.iterations = cfg.train.iterations;
  p.max_wallclock_ms = cfg.train.max_wallclock_seconds * 1000.0;
  p.warmdown_iters = cfg.train.warmdown_iters;
  p.warmdown_frac = cfg.train.warmdown_frac;
  p.min_lr = cfg.train.min_lr;
  p.by_wallclock = cfg.train.lr_schedule == "wallclock";
  return p;
}

double lr_multiplier(const ScheduleParams& p, int64_t step, double elapsed_ms) {
  const bool wallclock = p.by_wallclock && p.max_wallclock_ms > 0;
  if (p.warmdown_frac > 0) {
    double f = wallclock ? elapsed_ms / p.max_wallclock_ms
                         : static_cast<double>(step) / static_cast<double>(std::max<int64_t>(p.iterations, 1));
    f = std::clamp(f, 0.0, 1.0);
    if (f < 1.0 - p.warmdown_frac) return 1.0;
    return std::max((1.0 - f) / p.warmdown_frac, p.min_lr);
  }
  if (p.warmdown_iters <= 0) return 1.0;
  if (!wallclock) {
    const int64_t start = std::max<int64_t>(p.iterations - p.warmdown_iters, 0);
    if (step >= start && step < p.iterations)
      return std::max(static_cast<double>(p.iterations - step) / static_cast<double>(std::max<int64_t>(p.warmdown_iters, 1)),
                      0.0);
    return step >= p.iterations ? 0.0 : 1.0;
  }
  const double step_ms = elapsed_ms / static_cast<double>(std::max<int64_t>(step, 1));
  const double warmdown_ms = static_cast<double>(p.warmdown_iters) * step_ms;
  const double remaining_ms = std::max(p.max_wallclock_ms - elapsed_ms, 0.0);
  return remaining_ms <= warmdown_ms ? remaining_ms / std::max(warmdown_ms, 1e-9) : 1.0;
}

double muon_momentum_at(const OptimSection& o, int64_t step) {
  const double f = o.muon_momentum_warmup_steps > 0
                       ? std::min(static_cast<double>(step) / static_cast<double>(o.muon_momentum_warmup_steps), 1.0)
                       : 1.0;
  return (1.0 - f) * o.muon_momentum_warmup_start + f * o.muon_momentum;
}

}  // namespace pgolf::train
