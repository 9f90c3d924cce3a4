#pragma once
// The combined optimizer of the baseline: Muon on OptGroup::Muon matrices, Adam on the tied
// embedding (AdamEmbed) and on scalars/vectors (AdamScalar). Per-step hyperparameters live in
// one small device tensor refreshed by a single host->device copy per step.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/params.h"
#include "train/adam.h"
#include "train/config.h"
#include "train/muon.h"

namespace pgolf::dist {
class Communicator;
}

namespace pgolf::train {

class Optimizer {
 public:
  // ns_dtype: the Newton–Schulz dtype (bf16 on GPU, f32 on CPU). comm: the data-parallel ranks (null = one); with
  // more than one rank and cfg.muon_sharded, Muon splits its Newton–Schulz work over them (Muon::shard_over).
  // The grads given to step() must already be summed over the ranks.
  Optimizer(model::ParamTable& params, const OptimSection& cfg, Device dev, DType ns_dtype,
            dist::Communicator* comm = nullptr);

  // One update from the accumulated grads. `step` = updates done before this one (0-based),
  // `lr_mult` from the schedule. With grad_clip_norm > 0 the global grad norm is read back (one
  // sync) and every gradient is scaled by min(1, clip / (norm + 1e-6)) as torch's clip_grad_norm_.
  // Returns the global grad norm when it was computed, else -1.
  double step(int64_t step, double lr_mult);
  // The same update in two halves, for CUDA graphs: set_hyperparameters() computes this step's
  // hyperparameters on the host and copies them to the device (outside any graph; it is where the
  // optional grad-norm sync happens); apply() then launches device work only, so it can be captured
  // once and replayed every step (not when Muon is sharded: its all_gather waits on the host).
  // step() == set_hyperparameters() + apply().
  double set_hyperparameters(int64_t step, double lr_mult);
  void apply();
  // Scales the Muon weight decay from the next set_hyperparameters() on (the §6.4 taper; 1 = none).
  void set_muon_wd_multiplier(double m) { muon_wd_mult_ = m; }

  // Every state tensor with a stable name, for checkpoints.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  void reset_state();
  Muon& muon() { return *muon_; }
  Adam& adam() { return *adam_; }

 private:
  double global_grad_norm();

  model::ParamTable& params_;
  OptimSection cfg_;
  Device dev_;
  std::unique_ptr<Muon> muon_;
  std::unique_ptr<Adam> adam_;
  std::vector<AdamGroupHP> adam_group_;  // per Adam parameter
  std::vector<float> hp_host_;
  Tensor hp_dev_;   // [muon momentum (2) | muon apply (3 per matrix) | adam (8 per param)]
  Tensor norm_acc_; // (1) f32 scratch for the grad norm
  double muon_wd_mult_ = 1.0;
};

}  // namespace pgolf::train
