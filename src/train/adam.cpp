#include "train/adam.h"

#include <cmath>

#include "core/error.h"
#include "ops/optim.h"

namespace pgolf::train {

Adam::Adam(std::vector<model::Param*> params, Device dev) : params_(std::move(params)) {
  for (auto* p : params_) {
    m_.push_back(Tensor::zeros(p->spec.shape, DType::F32, dev));
    v_.push_back(Tensor::zeros(p->spec.shape, DType::F32, dev));
  }
}

std::array<float, 8> Adam::hp_values(size_t i, const AdamGroupHP& g, int64_t t, float grad_scale) const {
  PG_CHECK(t >= 1, "Adam: update number must be >= 1, got {}", t);
  // Bias corrections in double: 1 - 0.95^t loses digits in float for large t.
  const double bc1 = 1.0 - std::pow(static_cast<double>(g.beta1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(g.beta2), static_cast<double>(t));
  return {g.lr,
          g.beta1,
          g.beta2,
          g.eps,
          g.weight_decay * params_[i]->spec.weight_decay,
          static_cast<float>(bc1),
          static_cast<float>(bc2),
          grad_scale};
}

void Adam::step(const Tensor& hp) {
  PG_CHECK(hp.numel() == static_cast<int64_t>(8 * params_.size()), "Adam::step: hp has {} values, need {}", hp.numel(),
           8 * params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto b = static_cast<int64_t>(8 * i);
    ops::adam_step(params_[i]->value, params_[i]->grad, m_[i], v_[i], hp.slice(b, b + 8));
  }
}

void Adam::reset_state() {
  for (auto& t : m_) t.zero_();
  for (auto& t : v_) t.zero_();
}

}  // namespace pgolf::train
