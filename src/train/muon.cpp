#include "train/muon.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "dist/comm.h"
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

NsScratch NsScratch::make(int64_t rows, int64_t cols, DType dtype, Device dev, int64_t batch) {
  const int64_t s = std::min(rows, cols);
  auto shape = [batch](int64_t r, int64_t c) { return batch > 0 ? Shape{batch, r, c} : Shape{r, c}; };
  NsScratch n;
  n.x0 = Tensor::empty(shape(rows, cols), dtype, dev);
  n.x1 = Tensor::empty(shape(rows, cols), dtype, dev);
  n.a = Tensor::empty(shape(s, s), dtype, dev);
  n.b = Tensor::empty(shape(s, s), dtype, dev);
  return n;
}

Tensor newton_schulz(const Tensor& x, NsScratch& s, const std::vector<NsCoeffs>& coeffs, int steps) {
  PG_CHECK(x.ndim() == 2 || x.ndim() == 3, "newton_schulz: expected a matrix or a stack of matrices, got {}", x.desc());
  PG_CHECK(x.data() == s.x0.data() || x.data() == s.x1.data(), "newton_schulz: x must be a scratch buffer");
  PG_CHECK(!coeffs.empty() && steps > 0, "newton_schulz: no coefficients or steps");
  const bool stack = x.ndim() == 3;
  const int64_t K = stack ? x.dim(0) : 1, R = x.dim(-2), C = x.dim(-1);
  const bool tall = R > C;  // iterate on X^T X instead of transposing
  // One product per iteration step for the whole stack (a batched GEMM) instead of one per matrix.
  auto mm = [stack](const Tensor& a, ops::Trans ta, const Tensor& b, ops::Trans tb, const Tensor& c, float alpha,
                    float beta) {
    if (stack)
      ops::matmul_batched(a, ta, b, tb, c, alpha, beta);
    else
      ops::matmul(a, ta, b, tb, c, alpha, beta);
  };
  ops::row_normalize(x.view(Shape{K, R * C}), 1e-7f);  // each matrix to unit Frobenius norm
  Tensor cur = x, nxt = x.data() == s.x0.data() ? s.x1 : s.x0;
  for (int k = 0; k < steps; ++k) {
    const NsCoeffs& abc = coeffs[static_cast<size_t>(k) % coeffs.size()];
    if (tall) {
      mm(cur, ops::Trans::T, cur, ops::Trans::N, s.a, 1.f, 0.f);  // A = X^T X   (C, C)
    } else {
      mm(cur, ops::Trans::N, cur, ops::Trans::T, s.a, 1.f, 0.f);  // A = X X^T   (R, R)
    }
    ops::scale(s.a, abc[1], s.b);                                 // B = b A
    mm(s.a, ops::Trans::N, s.a, ops::Trans::N, s.b, abc[2], 1.f);  // B += c A A
    ops::scale(cur, abc[0], nxt);                                 // X' = a X
    if (tall) {
      mm(cur, ops::Trans::N, s.b, ops::Trans::N, nxt, 1.f, 1.f);  // X' += X B  (B symmetric)
    } else {
      mm(s.b, ops::Trans::N, cur, ops::Trans::N, nxt, 1.f, 1.f);  // X' += B X
    }
    std::swap(cur, nxt);
  }
  return cur;
}

Muon::Muon(std::vector<model::Param*> params, const MuonOptions& opt, Device dev)
    : params_(std::move(params)), opt_(opt), dev_(dev) {
  for (auto* p : params_)
    PG_CHECK(p->spec.shape.size() == 2, "Muon: parameter {} has shape {}; Muon takes matrices only", p->spec.name,
             p->spec.shape.str());
  build_single();
}

void Muon::build_single() {
  bufs_.clear();
  for (auto* p : params_) bufs_.push_back(Tensor::zeros(p->spec.shape, DType::F32, dev_));
  // Stacks of same-shape matrices for the single-rank step, in a fixed order (by shape, then list order).
  stacks_.clear();
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_shape;
  for (size_t i = 0; i < params_.size(); ++i) by_shape[{params_[i]->spec.shape[0], params_[i]->spec.shape[1]}].push_back(i);
  for (auto& [shape, members] : by_shape) {
    const auto k = static_cast<int64_t>(members.size());
    stacks_.push_back(Stack{members, NsScratch::make(shape.first, shape.second, opt_.ns_dtype, dev_, k)});
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
  if (shards_momentum())
    step_sharded_momentum(hp_momentum, hp_apply);
  else if (comm_)
    step_sharded(hp_momentum, hp_apply);
  else
    step_single(hp_momentum, hp_apply);
}

static Tensor apply_slice(const Tensor& hp_apply, size_t i) {
  return hp_apply.slice(static_cast<int64_t>(3 * i), static_cast<int64_t>(3 * i + 3));
}

void Muon::step_single(const Tensor& hp_momentum, const Tensor& hp_apply) {
  for (Stack& st : stacks_) {
    const int64_t K = st.scratch.x0.dim(0), R = st.scratch.x0.dim(1), C = st.scratch.x0.dim(2);
    const Shape mat{R, C};
    for (int64_t k = 0; k < K; ++k) {
      const size_t i = st.members[static_cast<size_t>(k)];
      ops::muon_momentum(params_[i]->grad, bufs_[i], st.scratch.x0.slice(k, k + 1).view(mat), hp_momentum,
                         opt_.nesterov);  // U -> slot k (NS dtype)
    }
    if (opt_.row_normalize) ops::row_normalize(st.scratch.x0.view(Shape{K * R, C}), 1e-7f);
    const Tensor x = newton_schulz(st.scratch.x0, st.scratch, opt_.coeffs, opt_.steps);
    for (int64_t k = 0; k < K; ++k) {
      const size_t i = st.members[static_cast<size_t>(k)];
      ops::muon_apply(params_[i]->value, x.slice(k, k + 1).view(mat), apply_slice(hp_apply, i));
    }
  }
}

void Muon::reset_state() {
  for (auto& b : bufs_)
    if (b.defined()) b.zero_();
  for (auto& b : banks_)
    if (b.mom.defined()) b.mom.zero_();
}

}  // namespace pgolf::train
