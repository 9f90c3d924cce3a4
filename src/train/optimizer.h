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
  // more than one rank and cfg.muon_sharded, Muon splits its Newton–Schulz work over them (Muon::shard_over), and
  // with cfg.muon_shard_momentum as well, it also sums the Muon gradients itself (reduce-scatter) and keeps only
  // its own matrices' momentum. The grads given to step() must already be summed over the ranks, except the
  // Muon matrices' when muon_reduces_grads() (below).
  Optimizer(model::ParamTable& params, const OptimSection& cfg, Device dev, DType ns_dtype,
            dist::Communicator* comm = nullptr);

  // Sharded momentum: whether the Muon matrices' grads reach step() already summed over the ranks, at least on
  // each matrix's owner (true, the default: exact accumulation sums every gradient, or the trainer reduced each
  // matrix to its owner during the backward, see muon_grad_owner(); the owners read them in place) or as each
  // rank's own (false: step() reduce-scatters them, and the caller must leave them out of its reductions).
  void set_muon_grads_summed(bool summed) { muon_grads_summed_ = summed; }
  // True when step() sums the Muon grads itself (sharded momentum and set_muon_grads_summed(false)).
  bool muon_reduces_grads() const { return muon_->shards_momentum() && !muon_grads_summed_; }
  // Sharded momentum: the rank whose step reads the summed gradient of parameter `table_index` (a Muon matrix;
  // only that rank needs the sum, so a reduce to it suffices); -1 for Adam parameters or without sharded momentum.
  int muon_grad_owner(size_t table_index) const {
    const int64_t m = muon_index_[table_index];
    return m >= 0 && muon_->shards_momentum() ? muon_->owner(static_cast<size_t>(m)) : -1;
  }

  // One update from the accumulated grads. `step` = updates done before this one (0-based),
  // `lr_mult` from the schedule. With grad_clip_norm > 0 every gradient is scaled by
  // min(1, clip / (norm + 1e-6)) of the global grad norm, as torch's clip_grad_norm_; the norm and the
  // scale are computed on the device (nothing waits on the host; grad_norm() reads the norm back). With
  // sharded momentum the norm is taken after the Muon grads are reduced: each owner's matrices plus the
  // (replicated) Adam part, the same value on every rank.
  void step(int64_t step, double lr_mult);
  // The same update in two halves, for CUDA graphs: set_hyperparameters() computes this step's
  // hyperparameters on the host and copies them to the device (outside any graph); apply() then launches
  // device work only (the grad norm and clip scale included), so it can be captured once and replayed
  // every step (not when Muon is sharded: its all_gather waits on the host).
  // step() == set_hyperparameters() + apply() (+ the Muon grad reduction first, with sharded momentum).
  void set_hyperparameters(int64_t step, double lr_mult);
  void apply();
  // The global grad norm of the last apply() (reads a device value back: a sync); -1 without clipping.
  double grad_norm() const;
  // Scales the Muon weight decay from the next set_hyperparameters() on (the §6.4 taper; 1 = none).
  void set_muon_wd_multiplier(double m) { muon_wd_mult_ = m; }

  // Every state tensor with a stable name, for checkpoints. With sharded Muon momentum, checkpoints still hold
  // every matrix's full momentum (the replicated format: resume works with any world size or switch), through
  // staged full copies: before saving, gather_state() (collective: every rank calls it) fills them from their
  // owners; before loading, stage_state() allocates them and commit_state() then keeps this rank's shard;
  // release_state() frees them. state_tensors() needs them staged. All four are no-ops otherwise.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  void gather_state() { muon_->stage_full_momentum(true); }
  void stage_state() { muon_->stage_full_momentum(false); }
  void commit_state() { muon_->unstage_full_momentum(true); }
  void release_state() { muon_->unstage_full_momentum(false); }
  void reset_state();
  Muon& muon() { return *muon_; }
  Adam& adam() { return *adam_; }

 private:
  // Device work of the clip: per-tensor sums of squares, their sum, the scale into hp_dev_'s grad_scale slots.
  void clip_on_device();

  model::ParamTable& params_;
  OptimSection cfg_;
  Device dev_;
  std::unique_ptr<Muon> muon_;
  std::unique_ptr<Adam> adam_;
  std::vector<AdamGroupHP> adam_group_;  // per Adam parameter
  std::vector<float> hp_host_;
  Tensor hp_dev_;   // [muon momentum (2) | muon apply (3 per matrix) | adam (8 per param)]
  // Per-tensor sums of squares for the grad norm, Muon matrices first (so one collective sums the owners' values
  // with sharded momentum); norm_at_[table index] is a tensor's place in it. norm_order_ (i32, on the device) is
  // norm_at_: the parts are added in table order, whatever the layout.
  Tensor norm_parts_;
  std::vector<int64_t> norm_at_;
  Tensor norm_order_;
  Tensor scale_slots_;  // i32: hp_dev_ indices of every grad_scale entry (Muon's momentum hp, each Adam hp)
  Tensor norm_dev_;     // (1) f32: the last computed global grad norm
  std::vector<int64_t> muon_index_;  // per table index: index into muon_->params(), or -1
  dist::Communicator* comm_ = nullptr;
  bool muon_grads_summed_ = true;
  double muon_wd_mult_ = 1.0;
};

}  // namespace pgolf::train
