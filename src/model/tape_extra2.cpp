// Tape wrappers of the second batch of record-stack ops (TECHNIQUES.md §5.11, §5.14): the attention
// output gate and the sigmoid interpolation of value residual learning. Same conventions as
// tape.cpp: outputs from the Arena, closures declare what they read.
#include <string>

#include "model/tape.h"
#include "ops/attn_gate.h"
#include "ops/lerp_gate.h"

namespace pgolf::model {

Var Tape::attn_gate(const Var& x, Param& w, const Var& y, float amp, float c) {
  const prof::Scope timer = fwd_scope(std::string("attn_gate"));
  PG_CHECK(x.t.ndim() == 2 && y.t.ndim() == 3 && x.t.dim(0) == y.t.dim(0),
           "attn_gate: input {} is not (N, C) for the attention output {} (N, H, D)", x.t.desc(), y.t.desc());
  const int x_buf = value_of(x, "attn_gate"), y_buf = value_of(y, "attn_gate");
  Var out = make(y.shape(), "attn_gate out");
  if (!measuring()) ops::attn_gate_forward(x.t, w.value, y.t, amp, c, out.t);
  record([this, x, y, out, &w, amp, c] {
    if (!has_grad(out)) return;
    // The op writes dy in every case; a constant y gets a scratch buffer.
    GradSink dy;
    Arena::Block scratch;
    if (needs_grad(y)) {
      dy = begin_grad(y);
    } else {
      scratch = arena_.alloc_block(y.shape(), y.t.dtype(), "attn_gate scratch grad");
      dy = GradSink{scratch.t, true, scratch};
    }
    GradSink dx;
    if (needs_grad(x)) dx = begin_grad(x);
    Arena::Block w_scratch;
    const Tensor dw = param_grad_or_scratch(w.grad, w.value, &w_scratch);
    if (!measuring()) ops::attn_gate_backward(x.t, w.value, y.t, grad_of(out), amp, c, dx.t, dy.t, dw);
    give_scratch(w_scratch);
    if (needs_grad(x)) end_grad(x, dx);
    if (needs_grad(y))
      end_grad(y, dy);
    else
      give_back(scratch);
  }, {x_buf, y_buf});
  return out;
}

Var Tape::sigmoid_lerp(const ChanParam& a, const Var& x, const Var& y) {
  const prof::Scope timer = fwd_scope(std::string("sigmoid_lerp"));
  PG_CHECK(x.t.numel() == y.t.numel(), "sigmoid_lerp: {} and {} differ in size", x.t.desc(), y.t.desc());
  const int x_buf = value_of(x, "sigmoid_lerp"), y_buf = value_of(y, "sigmoid_lerp");
  Var out = make(x.shape(), "sigmoid_lerp out");
  if (!measuring()) ops::sigmoid_lerp_forward(a.value, x.t, y.t, out.t);
  record([this, a, x, y, out] {
    if (!has_grad(out)) return;
    GradSink dx, dy;
    if (needs_grad(x)) dx = begin_grad(x);
    if (needs_grad(y)) dy = begin_grad(y);
    Arena::Block a_scratch;
    const Tensor da = param_grad_or_scratch(a.grad, a.value, &a_scratch);
    if (!measuring()) ops::sigmoid_lerp_backward(a.value, x.t, y.t, grad_of(out), dx.t, dy.t, da);
    give_scratch(a_scratch);
    if (needs_grad(y)) end_grad(y, dy);
    if (needs_grad(x)) end_grad(x, dx);
  }, {x_buf, y_buf});
  return out;
}

}  // namespace pgolf::model
