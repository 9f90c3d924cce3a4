#include "train/muon.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/optim.h"

namespace pgolf::train {

std::vector<NsCoeffs> ns_coefficients_baseline() { return {NsCoeffs{3.4445f, -4.7750f, 2.0315f}}; }

std::vector<NsCoeffs> ns_coefficients_polar_express() {
  return {
      NsCoeffs{8.156554524902461f, -22.48329292557795f, 15.878769915207462f},
      NsCoeffs{4.042929935166739f, -2.808917465908714f, 0.5000178451051316f},
      NsCoeffs{3.8916678022926607f, -2.772484153217685f, 0.5060648178503393f},
      NsCoeffs{3.285753657755655f, -2.3681294933425376f, 0.46449024233003106f},
      NsCoeffs{2.3465413258596377f, -1.7097828382687081f, 0.42323551169305323f},
  };
}

NsScratch NsScratch::make(int64_t rows, int64_t cols, DType dtype, Device dev) {
  const int64_t s = std::min(rows, cols);
  NsScratch n;
  n.x0 = Tensor::empty(Shape{rows, cols}, dtype, dev);
  n.x1 = Tensor::empty(Shape{rows, cols}, dtype, dev);
  n.a = Tensor::empty(Shape{s, s}, dtype, dev);
  n.b = Tensor::empty(Shape{s, s}, dtype, dev);
  return n;
}

Tensor newton_schulz(const Tensor& x, NsScratch& s, const std::vector<NsCoeffs>& coeffs, int steps) {
  PG_CHECK(x.ndim() == 2, "newton_schulz: expected a matrix, got {}", x.desc());
  PG_CHECK(x.data() == s.x0.data() || x.data() == s.x1.data(), "newton_schulz: x must be a scratch buffer");
  PG_CHECK(!coeffs.empty() && steps > 0, "newton_schulz: no coefficients or steps");
  const int64_t R = x.dim(0), C = x.dim(1);
  const bool tall = R > C;  // iterate on X^T X instead of transposing
  ops::row_normalize(x.view(Shape{1, R * C}), 1e-7f);
  Tensor cur = x, nxt = x.data() == s.x0.data() ? s.x1 : s.x0;
  for (int k = 0; k < steps; ++k) {
    const NsCoeffs& abc = coeffs[static_cast<size_t>(k) % coeffs.size()];
    if (tall) {
      ops::matmul(cur, ops::Trans::T, cur, ops::Trans::N, s.a);  // A = X^T X   (C, C)
    } else {
      ops::matmul(cur, ops::Trans::N, cur, ops::Trans::T, s.a);  // A = X X^T   (R, R)
    }
    ops::scale(s.a, abc[1], s.b);                                            // B = b A
    ops::matmul(s.a, ops::Trans::N, s.a, ops::Trans::N, s.b, abc[2], 1.f);  // B += c A A
    ops::scale(cur, abc[0], nxt);                                            // X' = a X
    if (tall) {
      ops::matmul(cur, ops::Trans::N, s.b, ops::Trans::N, nxt, 1.f, 1.f);  // X' += X B  (B symmetric)
    } else {
      ops::matmul(s.b, ops::Trans::N, cur, ops::Trans::N, nxt, 1.f, 1.f);  // X' += B X
    }
    std::swap(cur, nxt);
  }
  return cur;
}

Muon::Muon(std::vector<model::Param*> params, const MuonOptions& opt, Device dev)
    : params_(std::move(params)), opt_(opt) {
  for (auto* p : params_) {
    PG_CHECK(p->spec.shape.size() == 2, "Muon: parameter {} has shape {}; Muon takes matrices only", p->spec.name,
             p->spec.shape.str());
    bufs_.push_back(Tensor::zeros(p->spec.shape, DType::F32, dev));
    auto key = std::make_pair(p->spec.shape[0], p->spec.shape[1]);
    if (!scratch_.count(key)) scratch_.emplace(key, NsScratch::make(key.first, key.second, opt_.ns_dtype, dev));
  }
}

std::array<float, 3> Muon::apply_hp(size_t i, float lr, float weight_decay) const {
  const auto& sh = params_[i]->spec.shape;
  const float shape_scale =
      std::sqrt(std::max(1.f, static_cast<float>(sh[0]) / static_cast<float>(sh[1])));
  return {lr, weight_decay * params_[i]->spec.weight_decay, shape_scale};
}

void Muon::step(const Tensor& hp_momentum, const Tensor& hp_apply) {
  PG_CHECK(hp_apply.numel() == static_cast<int64_t>(3 * params_.size()), "Muon::step: hp_apply has {} values, need {}",
           hp_apply.numel(), 3 * params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    model::Param& p = *params_[i];
    NsScratch& s = scratch_.at({p.spec.shape[0], p.spec.shape[1]});
    ops::muon_momentum(p.grad, bufs_[i], s.x0, hp_momentum, opt_.nesterov);  // U -> x0 (NS dtype)
    if (opt_.row_normalize) ops::row_normalize(s.x0, 1e-7f);
    Tensor x = newton_schulz(s.x0, s, opt_.coeffs, opt_.steps);
    ops::muon_apply(p.value, x, hp_apply.slice(static_cast<int64_t>(3 * i), static_cast<int64_t>(3 * i + 3)));
  }
}

void Muon::reset_state() {
  for (auto& b : bufs_) b.zero_();
}

}  // namespace pgolf::train
