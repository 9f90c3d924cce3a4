#pragma once
// Weight averaging (TECHNIQUES.md §6.7, §6.8): an EMA of every parameter, updated after every
// optimizer step from step 0, and SWA, a uniform average of snapshots taken every K steps while the
// LR multiplier is below a threshold. At the end of training one of them (or ½ EMA + ½ SWA, the GDN
// seed's form) replaces the live weights before the final validation, the export and the int8
// round trip. All per-step work is ops kernels (ema_update, axpby, copies), so it runs on CPU and GPU.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/params.h"
#include "train/config.h"

namespace pgolf::train {

class WeightAverages {
 public:
  WeightAverages(model::ParamTable& params, const OptimSection& cfg, Device dev);

  bool ema_on() const { return ema_decay_ > 0; }
  bool swa_on() const { return swa_every_ > 0; }
  // Start of training: the EMA starts at the current weights, SWA holds no snapshot.
  void reset();
  // After optimizer step number `steps_done` (1-based) that ran with multiplier `lr_mult`: the EMA
  // update, and an SWA snapshot when steps_done % swa_every == 0 and lr_mult < swa_lr_threshold.
  void after_step(int64_t steps_done, double lr_mult);
  int64_t swa_count() const { return swa_count_; }
  void set_swa_count(int64_t n) { swa_count_ = n; }
  // Checkpoint tensors: "ema.<param>" and "swa.<param>" for the averages that are on.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  // The final_weights choice resolved: "auto" -> ema if on, else swa if on, else live; swa or
  // ema_swa without any snapshot falls back to ema (or live) — the returned string says what was used.
  std::string resolve_final() const;
  // Writes the resolved final weights into the parameters (and their compute copies); returns a
  // short description for the log.
  std::string apply_final();

 private:
  model::ParamTable& params_;
  double ema_decay_;
  int64_t swa_every_;
  double swa_lr_threshold_;
  std::string final_weights_;
  std::vector<Tensor> ema_, swa_;  // f32, one per parameter (empty when off)
  Tensor ema_hp_;                  // (1) f32 [decay] on the device, for ops::ema_update
  int64_t swa_count_ = 0;
};

}  // namespace pgolf::train
