#pragma once
// Adam with torch semantics (bias correction; decoupled weight decay when > 0, i.e. AdamW) for the
// tied embedding and the scalar/vector parameters (TECHNIQUES.md §6.3).
#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/params.h"

namespace pgolf::train {

struct AdamGroupHP {
  float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
};

class Adam {
 public:
  Adam(std::vector<model::Param*> params, Device dev);
  // hp: (8 * n) f32 device tensor, slice i = hp_values(i, ...) of parameter i.
  void step(const Tensor& hp);
  // [lr, beta1, beta2, eps, weight_decay, 1 - beta1^t, 1 - beta2^t, grad_scale] for update number t (1-based).
  std::array<float, 8> hp_values(size_t i, const AdamGroupHP& g, int64_t t, float grad_scale) const;
  size_t size() const { return params_.size(); }
  const std::vector<model::Param*>& params() const { return params_; }
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }
  void reset_state();

 private:
  std::vector<model::Param*> params_;
  std::vector<Tensor> m_, v_;
};

}  // namespace pgolf::train
