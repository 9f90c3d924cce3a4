#include "eval/ttt.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "dist/comm.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace pgolf::eval {

float ttt_chunk_lr(const TttOptions& o, int64_t c, int64_t num_chunks) {
  if (num_chunks <= 1) return o.lr;
  const double pi = 3.14159265358979323846;
  return static_cast<float>(o.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(c) / (num_chunks - 1))));
}

std::vector<int64_t> phase_boundaries(const PhasedTttOptions& o, const uint16_t* tokens, int64_t n, int bos_id) {
  PG_CHECK(o.prefix_docs >= 1 && o.phases >= 1 && o.phases <= o.prefix_docs,
           "phased ttt: --phased-ttt-docs {} and --phased-ttt-phases {} must satisfy 1 <= phases <= docs",
           o.prefix_docs, o.phases);
  std::vector<int64_t> starts = {0};  // document starts
  for (int64_t p = 1; p < n; ++p)
    if (tokens[p] == bos_id) starts.push_back(p);
  std::vector<int64_t> ends;
  for (int i = 0; i < o.phases; ++i) {
    const int64_t k = o.prefix_docs * (i + 1) / o.phases;  // documents 0..k-1 done
    if (k >= static_cast<int64_t>(starts.size())) break;  // the stream ends first
    const int64_t e = starts[static_cast<size_t>(k)] + 1;  // targets up to and including doc k's BOS
    if (e >= n) break;
    if (ends.empty() || e > ends.back()) ends.push_back(e);
  }
  return ends;
}

SgdAdapter::SgdAdapter(model::GPT& model, const TttOptions& opt, int64_t seq_len, dist::Communicator* comm)
    : model_(model), opt_(opt), seq_len_(seq_len), comm_(comm && comm->world() > 1 ? comm : nullptr) {
  PG_CHECK(seq_len_ > 0 && opt_.batch_seqs > 0 && opt_.epochs >= 0,
           "ttt: seq_len {}, batch_seqs {}, epochs {} must be positive", seq_len_, opt_.batch_seqs, opt_.epochs);
  PG_CHECK(opt_.momentum >= 0.f && opt_.momentum < 1.f, "ttt: momentum {} must be in [0, 1)", opt_.momentum);
  const Device dev = model_.device();
  for (const auto& p : model_.params().all()) momentum_.push_back(Tensor::zeros(p.value.shape(), DType::F32, dev));
  lr_scale_.assign(momentum_.size(), 1.f);
  for (const auto& [name, mult] : opt_.lr_mult) {
    PG_CHECK(mult >= 0.f, "ttt: lr multiplier {} of {} must be >= 0", mult, name);
    bool found = false;
    for (size_t i = 0; i < momentum_.size(); ++i)
      if (model_.params().all()[i].spec.name == name) {
        lr_scale_[i] = mult;
        found = true;
      }
    PG_CHECK(found, "ttt: no parameter named {} for its lr multiplier", name);
  }
  loss_sum_ = Tensor::zeros(Shape{1}, DType::F32, dev);
  norm_sq_ = Tensor::zeros(Shape{1}, DType::F32, dev);
  ids_ = Tensor::empty(Shape{opt_.batch_seqs, seq_len_}, DType::I32, dev);
  targets_ = Tensor::empty(Shape{opt_.batch_seqs, seq_len_}, DType::I32, dev);
  host_ids_.resize(static_cast<size_t>(opt_.batch_seqs * seq_len_));
  host_targets_.resize(host_ids_.size());
}

size_t SgdAdapter::plan_bytes() { return model_.plan_bytes(opt_.batch_seqs, seq_len_, /*with_backward=*/true); }

void SgdAdapter::train(const uint16_t* tokens, int64_t first_target, int64_t end_target, float lr, Arena& arena) {
  PG_CHECK(first_target >= 1 && first_target <= end_target, "ttt: invalid target range [{}, {})", first_target,
           end_target);
  const int64_t n_targets = end_target - first_target;
  if (n_targets == 0 || opt_.epochs == 0) return;
  const int64_t rows = (n_targets + seq_len_ - 1) / seq_len_;
  const int64_t world = comm_ ? comm_->world() : 1, rank = comm_ ? comm_->rank() : 0;
  for (int e = 0; e < opt_.epochs; ++e) {
    for (int64_t r0 = 0; r0 < rows; r0 += opt_.batch_seqs) {
      const int64_t nr = std::min(opt_.batch_seqs, rows - r0);
      // Every target of the step (all ranks' rows) counts in the mean: the same scale as one rank.
      const int64_t valid = std::min(end_target, first_target + (r0 + nr) * seq_len_) - (first_target + r0 * seq_len_);
      // This rank's contiguous share [ra, rb) of the step's rows (all of them with one rank).
      const int64_t per = (nr + world - 1) / world;
      const int64_t ra = std::min(nr, rank * per), rb = std::min(nr, ra + per), mine = rb - ra;
      for (int64_t r = 0; r < mine; ++r) {
        const int64_t row_first = first_target + (r0 + ra + r) * seq_len_;  // first target of the row
        for (int64_t i = 0; i < seq_len_; ++i) {
          const int64_t t = row_first + i;
          const size_t k = static_cast<size_t>(r * seq_len_ + i);
          // Targets past end_target are not scored yet: they must never reach the loss.
          const bool in = t < end_target;
          host_ids_[k] = in ? tokens[t - 1] : 0;
          host_targets_[k] = in ? tokens[t] : -1;
        }
      }
      model_.params().zero_grads();
      if (mine > 0) {
        const Shape sh{mine, seq_len_};
        Tensor ids = ids_.slice(0, mine), targets = targets_.slice(0, mine);
        ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
        targets.copy_from(Tensor::from_blob(host_targets_.data(), sh, DType::I32, Device::CPU));
        model_.forward_backward(ids, targets, 1.f / static_cast<float>(valid), arena, loss_sum_);
      }
      if (comm_) comm_->all_reduce_sum(model_.params().grad_flat());  // a rank without rows adds zeros
      step(lr);
    }
  }
}

void SgdAdapter::step(float lr) {
  auto& ps = model_.params().all();
  float clip_scale = 1.f;
  if (opt_.grad_clip > 0.f) {
    norm_sq_.zero_();
    for (const auto& p : ps) ops::sum_squares(p.grad, norm_sq_, /*accumulate=*/true);
    const double norm = std::sqrt(static_cast<double>(norm_sq_.to_float_vector()[0]));
    PG_CHECK(std::isfinite(norm), "ttt: gradient norm is {} at step {} (diverged; lower --ttt-lr)", norm, steps_);
    if (norm > opt_.grad_clip) clip_scale = static_cast<float>(opt_.grad_clip / (norm + 1e-6));
  }
  for (size_t i = 0; i < ps.size(); ++i) {
    ops::axpby(clip_scale, ps[i].grad, opt_.momentum, momentum_[i]);  // buf = mu buf + g
    if (lr_scale_[i] == 0.f) continue;                                  // frozen
    ops::axpby(-lr * lr_scale_[i], momentum_[i], 1.f, ps[i].value);    // p -= lr buf
  }
  model_.params().sync_compute();
  ++steps_;
}

WeightSnapshot::WeightSnapshot(const model::GPT& model) {
  for (const auto& p : model.params().all()) {
    values_.push_back(Tensor::empty(p.value.shape(), p.value.dtype(), p.value.device()));
    values_.back().copy_from(p.value);
  }
}

void WeightSnapshot::restore(model::GPT& model) const {
  auto& ps = model.params().all();
  PG_CHECK(ps.size() == values_.size(), "ttt: snapshot of {} tensors restored into a model of {}", values_.size(),
           ps.size());
  for (size_t i = 0; i < ps.size(); ++i) ps[i].value.copy_from(values_[i]);
  model.params().sync_compute();
  model.params().zero_grads();
}

}  // namespace pgolf::eval
