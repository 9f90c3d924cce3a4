#include "train/ema.h"

#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/optim.h"

namespace pgolf::train {

WeightAverages::WeightAverages(model::ParamTable& params, const OptimSection& cfg, Device dev)
    : params_(params),
      ema_decay_(cfg.ema_decay),
      swa_every_(cfg.swa_every),
      swa_lr_threshold_(cfg.swa_lr_threshold),
      final_weights_(cfg.final_weights) {
  PG_CHECK(ema_decay_ >= 0 && ema_decay_ < 1, "optim.ema_decay must be in [0, 1), got {}", ema_decay_);
  for (auto& p : params_.all()) {
    if (ema_on()) ema_.push_back(Tensor::zeros(p.spec.shape, DType::F32, dev));
    if (swa_on()) swa_.push_back(Tensor::zeros(p.spec.shape, DType::F32, dev));
  }
  if (ema_on()) {
    std::vector<float> hp{static_cast<float>(ema_decay_)};
    ema_hp_ = Tensor::from_vector(hp, Shape{1}, dev);
  }
}

void WeightAverages::reset() {
  auto& ps = params_.all();
  for (size_t i = 0; i < ema_.size(); ++i) ema_[i].copy_from(ps[i].value);
  for (auto& t : swa_) t.zero_();
  swa_count_ = 0;
}

void WeightAverages::after_step(int64_t steps_done, double lr_mult) {
  auto& ps = params_.all();
  for (size_t i = 0; i < ema_.size(); ++i) ops::ema_update(ema_[i], ps[i].value, ema_hp_);
  if (!swa_on() || steps_done % swa_every_ != 0 || !(lr_mult < swa_lr_threshold_)) return;
  // Running uniform mean: swa <- swa * n / (n + 1) + p / (n + 1).
  const double n = static_cast<double>(swa_count_);
  for (size_t i = 0; i < swa_.size(); ++i)
    ops::axpby(static_cast<float>(1.0 / (n + 1.0)), ps[i].value, static_cast<float>(n / (n + 1.0)), swa_[i]);
  ++swa_count_;
}

std::vector<std::pair<std::string, Tensor>> WeightAverages::state_tensors() {
  std::vector<std::pair<std::string, Tensor>> out;
  auto& ps = params_.all();
  for (size_t i = 0; i < ema_.size(); ++i) out.emplace_back("ema." + ps[i].spec.name, ema_[i]);
  for (size_t i = 0; i < swa_.size(); ++i) out.emplace_back("swa." + ps[i].spec.name, swa_[i]);
  return out;
}

std::string WeightAverages::resolve_final() const {
  std::string f = final_weights_;
  if (f == "auto") f = ema_on() ? "ema" : swa_on() ? "swa" : "live";
  if ((f == "swa" || f == "ema_swa") && swa_count_ == 0) f = ema_on() ? "ema" : "live";
  return f;
}

std::string WeightAverages::apply_final() {
  const std::string f = resolve_final();
  auto& ps = params_.all();
  if (f == "ema") {
    for (size_t i = 0; i < ps.size(); ++i) ps[i].value.copy_from(ema_[i]);
  } else if (f == "swa") {
    for (size_t i = 0; i < ps.size(); ++i) ps[i].value.copy_from(swa_[i]);
  } else if (f == "ema_swa") {
    for (size_t i = 0; i < ps.size(); ++i) {
      ps[i].value.copy_from(ema_[i]);
      ops::axpby(0.5f, swa_[i], 0.5f, ps[i].value);
    }
  }
  params_.sync_compute();
  std::string what = f == "live" ? "live weights (no averaging)"
                     : f == "ema" ? fmt::format("EMA weights (decay {})", ema_decay_)
                     : f == "swa" ? fmt::format("SWA weights ({} snapshots)", swa_count_)
                                  : fmt::format("1/2 EMA (decay {}) + 1/2 SWA ({} snapshots)", ema_decay_, swa_count_);
  if (f != final_weights_ && final_weights_ != "auto")
    what += fmt::format(" — optim.final_weights = {} but SWA took no snapshot", final_weights_);
  return what;
}

}  // namespace pgolf::train
