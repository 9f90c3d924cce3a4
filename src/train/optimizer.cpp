#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "dist/comm.h"
#include "ops/optim.h"
#include "ops/reduce.h"
#include "train/schedule.h"

namespace pgolf::train {

Optimizer::Optimizer(model::ParamTable& params, const OptimSection& cfg, Device dev, DType ns_dtype,
                     dist::Communicator* comm)
    : params_(params), cfg_(cfg), dev_(dev), comm_(comm) {
  std::vector<model::Param*> muon_params, adam_params;
  for (auto& p : params.all()) {
    muon_index_.push_back(-1);
    if (p.spec.group == model::OptGroup::Muon) {
      muon_index_.back() = static_cast<int64_t>(muon_params.size());
      muon_params.push_back(&p);
    } else {
      adam_params.push_back(&p);
      AdamGroupHP g;
      const bool embed = p.spec.group == model::OptGroup::AdamEmbed;
      g.lr = static_cast<float>(embed ? cfg.tied_embed_lr : cfg.scalar_lr);
      g.weight_decay = static_cast<float>(embed ? cfg.embed_weight_decay : cfg.scalar_weight_decay);
      g.beta1 = static_cast<float>(cfg.beta1);
      g.beta2 = static_cast<float>(cfg.beta2);
      g.eps = static_cast<float>(cfg.adam_eps);
      adam_group_.push_back(g);
    }
  }
  MuonOptions mo;
  mo.coeffs = cfg.muon_coefficients == "polar_express" ? ns_coefficients_polar_express() : ns_coefficients_baseline();
  mo.steps = static_cast<int>(cfg.muon_backend_steps);
  mo.nesterov = cfg.nesterov;
  mo.row_normalize = cfg.muon_row_normalize;
  mo.ns_dtype = ns_dtype;
  muon_ = std::make_unique<Muon>(std::move(muon_params), mo, dev);
  if (cfg.muon_sharded) muon_->shard_over(comm, cfg.muon_shard_momentum);  // no-op for null or one rank
  adam_ = std::make_unique<Adam>(std::move(adam_params), dev);
  hp_host_.assign(2 + 3 * muon_->size() + 8 * adam_->size(), 0.f);
  hp_dev_ = Tensor::zeros(Shape{static_cast<int64_t>(hp_host_.size())}, DType::F32, dev);
  const auto n_muon = static_cast<int64_t>(muon_->size());
  int64_t next_adam = n_muon;
  for (int64_t m : muon_index_) norm_at_.push_back(m >= 0 ? m : next_adam++);
  norm_parts_ = Tensor::zeros(Shape{std::max<int64_t>(1, next_adam)}, DType::F32, dev);
  std::vector<int32_t> order(norm_at_.begin(), norm_at_.end());
  norm_order_ = Tensor::from_vector(order, Shape{static_cast<int64_t>(order.size())}, dev);
  // grad_scale sits at hp[1] of Muon's momentum hp and at hp[7] of each Adam parameter's (see set_hyperparameters).
  std::vector<int32_t> slots = {1};
  for (size_t i = 0; i < adam_->size(); ++i)
    slots.push_back(static_cast<int32_t>(2 + 3 * n_muon + 8 * static_cast<int64_t>(i) + 7));
  scale_slots_ = Tensor::from_vector(slots, Shape{static_cast<int64_t>(slots.size())}, dev);
  norm_dev_ = Tensor::from_vector(std::vector<float>{-1.f}, Shape{1}, dev);
}

void Optimizer::clip_on_device() {
  // One sum of squares per tensor, then one kernel adds them in table order (in double): the same additions whether
  // the Muon values come from the full gradients or from their owners' shards, so sharding does not change the norm.
  const bool sharded = muon_->shards_momentum();
  const auto& all = params_.all();
  for (size_t t = 0; t < all.size(); ++t) {
    const Tensor slot = norm_parts_.slice(norm_at_[t], norm_at_[t] + 1);
    if (sharded && muon_index_[t] >= 0) {
      const Tensor g = muon_->owned_grad(static_cast<size_t>(muon_index_[t]));
      if (g.defined())
        ops::sum_squares(g, slot);
      else
        slot.zero_();  // owned elsewhere: this rank adds 0, the owner the value (x + 0 = x exactly)
    } else {
      ops::sum_squares(all[t].grad, slot);
    }
  }
  if (sharded && muon_->size()) comm_->all_reduce_sum(norm_parts_.slice(0, static_cast<int64_t>(muon_->size())));
  ops::clip_grad_scale(norm_parts_, norm_order_, cfg_.grad_clip_norm, hp_dev_, scale_slots_, norm_dev_);
}

double Optimizer::grad_norm() const {
  return cfg_.grad_clip_norm > 0 ? static_cast<double>(norm_dev_.to_float_vector()[0]) : -1.0;
}

void Optimizer::step(int64_t step, double lr_mult) {
  if (muon_->shards_momentum()) muon_->reduce_grads(muon_grads_summed_);
  set_hyperparameters(step, lr_mult);
  apply();
}

void Optimizer::set_hyperparameters(int64_t step, double lr_mult) {
  // grad_scale is written as 1 here; with clipping, apply() overwrites it on the device before the kernels read it.
  const float grad_scale = 1.f;
  const auto momentum = static_cast<float>(muon_momentum_at(cfg_, step));
  size_t o = 0;
  hp_host_[o++] = momentum;
  hp_host_[o++] = grad_scale;
  const auto muon_lr = static_cast<float>(cfg_.matrix_lr * lr_mult);
  for (size_t i = 0; i < muon_->size(); ++i) {
    auto v = muon_->apply_hp(i, muon_lr, static_cast<float>(cfg_.muon_weight_decay * muon_wd_mult_));
    std::copy(v.begin(), v.end(), hp_host_.begin() + static_cast<std::ptrdiff_t>(o));
    o += 3;
  }
  for (size_t i = 0; i < adam_->size(); ++i) {
    AdamGroupHP g = adam_group_[i];
    g.lr = static_cast<float>(g.lr * lr_mult);
    auto v = adam_->hp_values(i, g, step + 1, grad_scale);
    std::copy(v.begin(), v.end(), hp_host_.begin() + static_cast<std::ptrdiff_t>(o));
    o += 8;
  }
  hp_dev_.copy_from(Tensor::from_blob(hp_host_.data(), hp_dev_.shape(), DType::F32, Device::CPU));
}

void Optimizer::apply() {
  if (cfg_.grad_clip_norm > 0) clip_on_device();
  const int64_t muon_end = 2 + 3 * static_cast<int64_t>(muon_->size());
  if (muon_->size()) muon_->step(hp_dev_.slice(0, 2), hp_dev_.slice(2, muon_end));
  if (adam_->size()) adam_->step(hp_dev_.slice(muon_end, hp_dev_.numel()));
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < muon_->size(); ++i)
    out.emplace_back("muon.momentum." + muon_->params()[i]->spec.name, muon_->full_momentum(i));
  for (size_t i = 0; i < adam_->size(); ++i) {
    out.emplace_back("adam.m." + adam_->params()[i]->spec.name, adam_->first_moments()[i]);
    out.emplace_back("adam.v." + adam_->params()[i]->spec.name, adam_->second_moments()[i]);
  }
  return out;
}

void Optimizer::reset_state() {
  muon_->reset_state();
  adam_->reset_state();
}

}  // namespace pgolf::train
