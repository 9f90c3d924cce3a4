// Tape ops of the fused residual update + RMSNorm (tape.h, ops/residual_norm.h). Each records ONE
// closure where the unfused path records two or three (add_mul_channel | mix_channel, rmsnorm,
// mul_head): it runs after every consumer of y and of n, so y's gradient (the residual's) and n's are
// both complete, and the norm's backward and the update's channel gradients happen in one pass.
#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/residual_norm.h"

namespace pgolf::model {

Tape::Normed Tape::add_rmsnorm(const Var& x, const ChanParam& s, const Var& f, float g) {
  const prof::Scope timer = fwd_scope(std::string("add_rmsnorm"));
  PG_CHECK(x.t.ndim() == 2 && f.shape() == x.shape(), "add_rmsnorm: x {} and f {} must be the same (N, C)", x.t.desc(),
           f.t.desc());
  check_input(x, "add_rmsnorm");
  const int f_buf = value_of(f, "add_rmsnorm");
  Var y = make(x.shape(), "add_rmsnorm y", DType::F32);
  Var n = make(x.shape(), "add_rmsnorm n");
  int rstd_buf = -1;
  Tensor rstd = alloc_saved(Shape{x.t.dim(0)}, DType::F32, "add_rmsnorm rstd", &rstd_buf);
  if (!measuring()) ops::add_rmsnorm_forward(x.t, s.value, f.t, y.t, n.t, rstd, g, eps_);
  record([this, x, s, f, y, n, rstd, g] {
    if (!has_grad(y) && !has_grad(n)) return;
    // y's gradient buffer receives the total and is handed on to x (as add_mul_channel's pass_grad).
    // Without a residual gradient (n is y's only reader) it starts from zero.
    if (!has_grad(y)) {
      bool acc = false;
      const Tensor dy0 = grad_into(y, &acc);
      if (!measuring()) dy0.zero_();
    }
    bool acc = false;
    const Tensor df = needs_grad(f) ? grad_into(f, &acc) : Tensor();
    Arena::Block scratch;
    const Tensor ds = param_grad_or_scratch(s.grad, s.value, &scratch);
    if (!measuring())
      ops::add_rmsnorm_backward(n.t, rstd, has_grad(n) ? grad_of(n) : Tensor(), g, s.value, f.t, grad_of(y), ds, df, acc);
    give_scratch(scratch);
    pass_grad(x, y);
  }, {f_buf, value_of(n, "add_rmsnorm"), rstd_buf});
  return Normed{y, n};
}

Tape::Normed Tape::mix_rmsnorm(const ChanParam& a, const Var& x, const ChanParam& b, const Var& x0, float g) {
  const prof::Scope timer = fwd_scope(std::string("mix_rmsnorm"));
  PG_CHECK(x.t.ndim() == 2 && x0.shape() == x.shape(), "mix_rmsnorm: x {} and x0 {} must be the same (N, C)",
           x.t.desc(), x0.t.desc());
  const int x_buf = value_of(x, "mix_rmsnorm"), x0_buf = value_of(x0, "mix_rmsnorm");
  Var y = make(x.shape(), "mix_rmsnorm y", DType::F32);
  Var n = make(x.shape(), "mix_rmsnorm n");
  int rstd_buf = -1;
  Tensor rstd = alloc_saved(Shape{x.t.dim(0)}, DType::F32, "mix_rmsnorm rstd", &rstd_buf);
  if (!measuring()) ops::mix_rmsnorm_forward(a.value, x.t, b.value, x0.t, y.t, n.t, rstd, g, eps_);
  record([this, a, x, b, x0, y, n, rstd, g] {
    if (!has_grad(y) && !has_grad(n)) return;
    // Without a residual gradient a zero one stands in (a temporary; the op may use dy as scratch).
    Arena::Block zero{};
    const bool no_dy = !has_grad(y);
    if (no_dy) {
      zero = arena_.alloc_block(y.shape(), DType::F32, "mix_rmsnorm zero dy");
      if (!measuring()) zero.t.zero_();
    }
    const Tensor dy = no_dy ? zero.t : grad_of(y);
    // x then x0, so when they are one value (block 0: x = x0) x0's contribution adds onto x's.
    bool acc_x = false, acc_x0 = false;
    const Tensor dx = needs_grad(x) ? grad_into(x, &acc_x) : Tensor();
    const Tensor dx0 = needs_grad(x0) ? grad_into(x0, &acc_x0) : Tensor();
    Arena::Block scratch_a, scratch_b;
    const Tensor da = param_grad_or_scratch(a.grad, a.value, &scratch_a);
    const Tensor db = param_grad_or_scratch(b.grad, b.value, &scratch_b);
    if (!measuring())
      ops::mix_rmsnorm_backward(n.t, rstd, has_grad(n) ? grad_of(n) : Tensor(), g, a.value, x.t, b.value, x0.t, dy,
                                da, db, dx, acc_x, dx0, acc_x0);
    give_scratch(scratch_b);
    give_scratch(scratch_a);
    if (no_dy) give_back(zero);
  }, {x_buf, x0_buf, value_of(n, "mix_rmsnorm"), rstd_buf});
  return Normed{y, n};
}

}  // namespace pgolf::model
