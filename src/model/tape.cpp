#include "model/tape.h"

#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

namespace pgolf::model {

ChanParam chan(Param& p) {
  Shape s{p.value.numel()};
  return ChanParam{p.value.view(s), p.grad.defined() ? p.grad.view(s) : Tensor()};
}

ChanParam chan_row(Param& p, int64_t row) {
  PG_CHECK(p.value.ndim() == 2, "chan_row: parameter {} is {}, expected 2-D", p.spec.name, p.value.desc());
  return ChanParam{p.value.slice(row, row + 1).view(Shape{p.value.dim(1)}),
                   p.grad.defined() ? p.grad.slice(row, row + 1).view(Shape{p.value.dim(1)}) : Tensor()};
}

namespace {
// The tensor a matmul reads for parameter p: the bf16 compute copy when there is one.
const Tensor& matmul_weight(const Param& p, DType act) {
  const Tensor& w = p.compute.defined() ? p.compute : p.value;
  PG_CHECK(w.dtype() == act, "linear: weight {} is {} but activations are {}; allocate the table with compute dtype {}",
           p.spec.name, w.desc(), dtype_name(act), dtype_name(act));
  return w;
}

Shape rows_by_last(const Shape& s) {
  int64_t c = s[s.nd - 1];
  return Shape{s.numel() / c, c};
}
}  // namespace

Tape::Tape(Arena& arena, DType act_dtype, float norm_eps, bool record_grads)
    : arena_(arena), act_(act_dtype), eps_(norm_eps), record_(record_grads) {
  if (record_) {
    nodes_.reserve(1024);
    closures_.reserve(1024);
  }
}

Var Tape::make(const Shape& s, const char* what, DType dt) {
  Var v{alloc(s, dt, what), -1};
  if (record_) {
    v.node = static_cast<int>(nodes_.size());
    nodes_.push_back(Node{s, dt, Tensor(), false});
  }
  return v;
}

Var Tape::view(const Var& x, const Shape& s) { return Var{x.t.view(s), x.node}; }

Tensor Tape::grad_of(const Var& x) const {
  const Node& n = nodes_[static_cast<size_t>(x.node)];
  return n.grad.view(x.shape());
}

Tape::GradSink Tape::begin_grad(const Var& x) {
  Node& n = nodes_[static_cast<size_t>(x.node)];
  if (!n.has_grad) {
    n.grad = alloc(n.shape, n.dtype, "activation grad");
    n.has_grad = true;
    return GradSink{n.grad.view(x.shape()), false};
  }
  return GradSink{alloc(x.shape(), n.dtype, "grad contribution"), true};
}

void Tape::end_grad(const Var& x, const GradSink& g) {
  if (!g.temp || measuring()) return;
  Tensor acc = grad_of(x);
  ops::add(acc, g.t, acc);
}

void Tape::pass_grad(const Var& x, const Tensor& dy) {
  if (!needs_grad(x)) return;
  Node& n = nodes_[static_cast<size_t>(x.node)];
  if (!n.has_grad && dy.dtype() == n.dtype) {
    n.grad = dy.view(n.shape);
    n.has_grad = true;
    return;
  }
  if (!n.has_grad) {
    n.grad = alloc(n.shape, n.dtype, "activation grad");
    n.has_grad = true;
    if (!measuring()) ops::copy(dy, grad_of(x));
    return;
  }
  if (measuring()) return;
  Tensor acc = grad_of(x);
  ops::add(acc, dy, acc);
}

void Tape::record(std::function<void()> fn) {
  if (record_) closures_.push_back(std::move(fn));
}

void Tape::backward() {
  PG_CHECK(record_, "Tape::backward on a forward-only tape");
  for (size_t i = closures_.size(); i-- > 0;) closures_[i]();
  closures_.clear();
}

Var Tape::embedding(const Tensor& ids, Param& table) {
  const Tensor& w = table.compute.defined() ? table.compute : table.value;
  Var y = make(Shape{ids.numel(), w.dim(1)}, "embedding out");
  if (!measuring()) ops::embedding_forward(ids, w, y.t);
  record([this, ids, y, &table] {
    if (!has_grad(y) || measuring()) return;
    ops::embedding_backward(ids, grad_of(y), table.grad);
  });
  return y;
}

Var Tape::rmsnorm(const Var& x) {
  Shape rc = rows_by_last(x.shape());
  Var y = make(x.shape(), "rmsnorm out");
  Tensor rstd = alloc(Shape{rc[0]}, DType::F32, "rmsnorm rstd");
  if (!measuring()) ops::rmsnorm_forward(x.t.view(rc), Tensor(), y.t.view(rc), rstd, eps_);
  record([this, x, y, rstd, rc] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::rmsnorm_backward(x.t.view(rc), Tensor(), rstd, grad_of(y).view(rc), dx.t.view(rc), Tensor());
    end_grad(x, dx);
  });
  return y;
}

Var Tape::linear(const Var& x, Param& w) {
  const Tensor& wt = matmul_weight(w, act_);
  PG_CHECK(x.t.ndim() == 2 && x.t.dim(1) == wt.dim(1) && x.t.dtype() == wt.dtype(),
           "linear {}: input {} does not match weight {}", w.spec.name, x.t.desc(), wt.desc());
  Var y = make(Shape{x.t.dim(0), wt.dim(0)}, "linear out");
  if (!measuring()) ops::linear_forward(x.t, wt, y.t);
  record([this, x, y, &w, wt] {
    if (!has_grad(y)) return;
    GradSink dx;
    if (needs_grad(x)) dx = begin_grad(x);
    if (!measuring()) ops::linear_backward(x.t, wt, grad_of(y), dx.t, w.grad);
    if (needs_grad(x)) end_grad(x, dx);
  });
  return y;
}

Var Tape::rope(const Var& x, int rot_dims, float base) {
  Var y = make(x.shape(), "rope out");
  if (!measuring()) ops::rope_forward(x.t, y.t, rot_dims, base);
  record([this, x, y, rot_dims, base] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::rope_backward(grad_of(y), dx.t, rot_dims, base);
    end_grad(x, dx);
  });
  return y;
}

Var Tape::mul_head(const Var& x, Param& gain, const Tensor& expand) {
  int64_t H = gain.value.numel(), C = x.t.dim(1);
  PG_CHECK(x.t.ndim() == 2 && expand.dim(0) == H && expand.dim(1) == C,
           "mul_head {}: input {} and expansion {} do not fit {} heads", gain.spec.name, x.t.desc(), expand.desc(), H);
  // The per-head gain broadcast to a per-channel vector (1, C) = gain (1, H) @ expand (H, C).
  Tensor g = alloc(Shape{1, C}, DType::F32, "head gain");
  Var y = make(x.shape(), "mul_head out");
  if (!measuring()) {
    ops::matmul(gain.value.view(Shape{1, H}), ops::Trans::N, expand, ops::Trans::N, g);
    ops::mul_channel(x.t, g.view(Shape{C}), y.t);
  }
  record([this, x, y, g, &gain, expand, H, C] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    Tensor dg = arena_.zeros(Shape{C}, DType::F32, "head gain grad");
    if (!measuring()) {
      ops::channel_dot_accum(dy, x.t, dg);
      ops::matmul(dg.view(Shape{1, C}), ops::Trans::N, expand, ops::Trans::T, gain.grad.view(Shape{1, H}), 1.f, 1.f);
    }
    if (!needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::mul_channel(dy, g.view(Shape{C}), dx.t);
    end_grad(x, dx);
  });
  return y;
}

Var Tape::attention(const Var& q, const Var& k, const Var& v, const ops::AttnParams& p) {
  const Shape& qs = q.shape();
  Var y = make(qs, "attention out");
  Tensor lse = alloc(Shape{qs[0], qs[2], qs[1]}, DType::F32, "attention lse");
  if (!measuring()) ops::attention_forward(q.t, k.t, v.t, Tensor(), y.t, lse, p);
  record([this, q, k, v, y, lse, p] {
    if (!has_grad(y)) return;
    // attention_backward writes all three gradients; a constant input gets a scratch buffer.
    auto sink = [this](const Var& x) {
      return needs_grad(x) ? begin_grad(x) : GradSink{alloc(x.shape(), x.t.dtype(), "attention scratch grad"), false};
    };
    GradSink dq = sink(q), dk = sink(k), dv = sink(v);
    if (!measuring())
      ops::attention_backward(q.t, k.t, v.t, Tensor(), y.t, lse, grad_of(y), dq.t, dk.t, dv.t, p);
    if (needs_grad(q)) end_grad(q, dq);
    if (needs_grad(k)) end_grad(k, dk);
    if (needs_grad(v)) end_grad(v, dv);
  });
  return y;
}

Var Tape::activation(const Var& x, ops::Act act, float slope) {
  Var y = make(x.shape(), "activation out");
  if (!measuring()) ops::activation_forward(act, x.t, y.t, slope);
  record([this, x, y, act, slope] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::activation_backward(act, x.t, grad_of(y), dx.t, slope);
    end_grad(x, dx);
  });
  return y;
}

Var Tape::add_mul_channel(const Var& x, const ChanParam& s, const Var& f) {
  Var y = make(x.shape(), "add_mul_channel out", DType::F32);
  if (!measuring()) ops::add_mul_channel(x.t, s.value, f.t, y.t);
  record([this, x, s, f, y] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    // Everything that reads dy runs before pass_grad, which may hand dy's buffer on to x.
    if (!measuring()) ops::channel_dot_accum(dy, f.t, s.grad);
    if (needs_grad(f)) {
      GradSink df = begin_grad(f);
      if (!measuring()) ops::mul_channel(dy, s.value, df.t);
      end_grad(f, df);
    }
    pass_grad(x, dy);
  });
  return y;
}

Var Tape::mix_channel(const ChanParam& s0, const Var& x0, const ChanParam& s1, const Var& x1) {
  Var y = make(x0.shape(), "mix_channel out", DType::F32);
  if (!measuring()) ops::mix_channel(s0.value, x0.t, s1.value, x1.t, y.t);
  record([this, s0, x0, s1, x1, y] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    if (!measuring()) {
      ops::channel_dot_accum(dy, x0.t, s0.grad);
      ops::channel_dot_accum(dy, x1.t, s1.grad);
    }
    for (auto [x, s] : {std::pair{x0, s0.value}, std::pair{x1, s1.value}}) {
      if (!needs_grad(x)) continue;
      GradSink dx = begin_grad(x);
      if (!measuring()) ops::mul_channel(dy, s, dx.t);
      end_grad(x, dx);
    }
  });
  return y;
}

void Tape::softcap_cross_entropy(const Var& logits, const Tensor& targets, float cap, const Tensor& losses,
                                 float grad_scale) {
  bool grad = needs_grad(logits);
  // The logits are not needed by any backward (the head's linear reads h and E), so dlogits
  // overwrite them in place: fp32 logits for the whole batch never coexist with their gradient.
  if (!measuring()) ops::softcap_cross_entropy(logits.t, targets, cap, losses, grad ? logits.t : Tensor(), grad_scale);
  if (!grad) return;
  Node& n = nodes_[static_cast<size_t>(logits.node)];
  PG_CHECK(!n.has_grad, "softcap_cross_entropy: logits already have a gradient");
  n.grad = logits.t.view(n.shape);
  n.has_grad = true;
}

}  // namespace pgolf::model
