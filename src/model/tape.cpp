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
    : arena_(arena), act_(act_dtype), eps_(norm_eps), record_(record_grads), free_dead_(free_dead_default()) {
  if (record_) {
    nodes_.reserve(1024);
    bufs_.reserve(2048);
    steps_.reserve(1024);
  }
}

bool& Tape::free_dead_default() {
  static bool on = true;
  return on;
}

// ---------------------------------------------------------------------------------------------
// Buffer lifetimes.

int Tape::track(const Arena::Block& b, bool value) {
  bufs_.push_back(Buf{b, 1, -1, value, false});
  return static_cast<int>(bufs_.size()) - 1;
}

void Tape::drop(int buf) {
  Buf& b = bufs_[static_cast<size_t>(buf)];
  PG_CHECK(b.holds > 0, "tape: buffer {} (offset {}) released more often than held", buf, b.block.offset);
  if (--b.holds == 0) give_back(b.block);
}

void Tape::drop_value(int buf) {
  Buf& b = bufs_[static_cast<size_t>(buf)];
  if (!b.value_held) return;
  b.value_held = false;
  drop(buf);
}

void Tape::drop_grad(int node) {
  Node& n = nodes_[static_cast<size_t>(node)];
  if (n.grad_buf < 0) return;
  const int buf = n.grad_buf;
  n.grad_buf = -1;
  n.grad = Tensor();  // its consumers have all run; nothing may read it any more
  drop(buf);
}

int Tape::value_of(const Var& x, const char* op) const {
  if (x.node < 0) return -1;
  const int buf = nodes_[static_cast<size_t>(x.node)].value_buf;
  PG_CHECK(buf < 0 || !bufs_[static_cast<size_t>(buf)].released,
           "tape: {} reads {} {} after the model released it (Tape::release)", op, x.t.desc(), x.shape().str());
  return buf;
}

Tensor Tape::alloc_saved(const Shape& s, DType dt, const char* what, int* buf) {
  if (!record_) {
    *buf = -1;
    return alloc(s, dt, what);
  }
  Arena::Block b = arena_.alloc_block(s, dt, what);
  *buf = track(b, /*value=*/true);
  return b.t;
}

void Tape::release(const Var& v) {
  const int buf = value_of(v, "release");
  if (buf < 0) return;
  Buf& b = bufs_[static_cast<size_t>(buf)];
  b.released = true;
  if (b.first_reader < 0) drop_value(buf);
}

void Tape::keep(const Var& v) {
  const int buf = value_of(v, "keep");
  if (buf >= 0) hold(buf);
}

Var Tape::make(const Shape& s, const char* what, DType dt) {
  if (!record_) return Var{alloc(s, dt, what), -1};
  Arena::Block b = arena_.alloc_block(s, dt, what);
  Var v{b.t, static_cast<int>(nodes_.size())};
  nodes_.push_back(Node{s, dt, Tensor(), false, track(b, /*value=*/true), -1});
  unrecorded_outputs_.push_back(v.node);
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
    Arena::Block b = arena_.alloc_block(n.shape, n.dtype, "activation grad");
    n.grad = b.t;
    n.grad_buf = track(b, /*value=*/false);
    n.has_grad = true;
    return GradSink{n.grad.view(x.shape()), false, {}};
  }
  Arena::Block b = arena_.alloc_block(x.shape(), n.dtype, "grad contribution");
  return GradSink{b.t, true, b};
}

void Tape::end_grad(const Var& x, const GradSink& g) {
  if (!g.temp) return;
  if (!measuring()) {
    Tensor acc = grad_of(x);
    ops::add(acc, g.t, acc);
  }
  give_back(g.block);
}

void Tape::pass_grad(const Var& x, const Var& y) {
  if (!needs_grad(x)) return;
  const Tensor dy = grad_of(y);
  Node& n = nodes_[static_cast<size_t>(x.node)];
  if (!n.has_grad && dy.dtype() == n.dtype) {  // alias: x's gradient IS y's, ownership is shared
    n.grad = dy.view(n.shape);
    n.grad_buf = nodes_[static_cast<size_t>(y.node)].grad_buf;
    if (n.grad_buf >= 0) hold(n.grad_buf);
    n.has_grad = true;
    return;
  }
  if (!n.has_grad) {
    Arena::Block b = arena_.alloc_block(n.shape, n.dtype, "activation grad");
    n.grad = b.t;
    n.grad_buf = track(b, /*value=*/false);
    n.has_grad = true;
    if (!measuring()) ops::copy(dy, grad_of(x));
    return;
  }
  if (measuring()) return;
  Tensor acc = grad_of(x);
  ops::add(acc, dy, acc);
}

void Tape::record(std::function<void()> fn, std::initializer_list<int> reads) {
  if (!record_) return;
  const int index = static_cast<int>(steps_.size());
  for (int buf : reads)
    if (buf >= 0 && bufs_[static_cast<size_t>(buf)].first_reader < 0) bufs_[static_cast<size_t>(buf)].first_reader = index;
  steps_.push_back(Step{std::move(fn), std::move(unrecorded_outputs_), {}});
  unrecorded_outputs_.clear();
}

void Tape::backward() {
  PG_CHECK(record_, "Tape::backward on a forward-only tape");
  // Values no closure reads are dead now; the others die after their last reader (the first
  // closure recorded that reads them, as closures run in reverse).
  for (size_t b = 0; b < bufs_.size(); ++b) {
    if (!bufs_[b].value_held) continue;
    if (bufs_[b].first_reader < 0)
      drop_value(static_cast<int>(b));
    else
      steps_[static_cast<size_t>(bufs_[b].first_reader)].dead_values.push_back(static_cast<int>(b));
  }
  for (size_t i = steps_.size(); i-- > 0;) {
    Step& st = steps_[i];
    st.fn();
    st.fn = nullptr;
    for (int node : st.outputs) drop_grad(node);  // consumed by the op that produced the node
    for (int buf : st.dead_values) drop_value(buf);
  }
  steps_.clear();
  // Gradients of nodes no op produced (none today) and of the terminal op are given back too.
  for (size_t n = 0; n < nodes_.size(); ++n) drop_grad(static_cast<int>(n));
}

Var Tape::embedding(const Tensor& ids, Param& table) {
  const Tensor& w = table.compute.defined() ? table.compute : table.value;
  Var y = make(Shape{ids.numel(), w.dim(1)}, "embedding out");
  if (!measuring()) ops::embedding_forward(ids, w, y.t);
  record([this, ids, y, &table] {
    if (!has_grad(y) || measuring()) return;
    ops::embedding_backward(ids, grad_of(y), table.grad);
  }, {});
  return y;
}

Var Tape::rmsnorm(const Var& x) {
  Shape rc = rows_by_last(x.shape());
  const int x_buf = value_of(x, "rmsnorm");
  Var y = make(x.shape(), "rmsnorm out");
  int rstd_buf = -1;
  Tensor rstd = alloc_saved(Shape{rc[0]}, DType::F32, "rmsnorm rstd", &rstd_buf);
  if (!measuring()) ops::rmsnorm_forward(x.t.view(rc), Tensor(), y.t.view(rc), rstd, eps_);
  record([this, x, y, rstd, rc] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::rmsnorm_backward(x.t.view(rc), Tensor(), rstd, grad_of(y).view(rc), dx.t.view(rc), Tensor());
    end_grad(x, dx);
  }, {x_buf, rstd_buf});
  return y;
}

Tape::LinearInputHook& Tape::linear_input_hook() {
  thread_local LinearInputHook hook;
  return hook;
}

Var Tape::linear(const Var& x, Param& w) {
  const Tensor& wt = matmul_weight(w, act_);
  PG_CHECK(x.t.ndim() == 2 && x.t.dim(1) == wt.dim(1) && x.t.dtype() == wt.dtype(),
           "linear {}: input {} does not match weight {}", w.spec.name, x.t.desc(), wt.desc());
  const int x_buf = value_of(x, "linear");
  Var y = make(Shape{x.t.dim(0), wt.dim(0)}, "linear out");
  if (!measuring()) ops::linear_forward(x.t, wt, y.t);
  if (!measuring() && linear_input_hook()) linear_input_hook()(w.spec.name, x.t);
  record([this, x, y, &w, wt] {
    if (!has_grad(y)) return;
    GradSink dx;
    if (needs_grad(x)) dx = begin_grad(x);
    if (!measuring()) ops::linear_backward(x.t, wt, grad_of(y), dx.t, w.grad);
    if (needs_grad(x)) end_grad(x, dx);
  }, {x_buf});
  return y;
}

Var Tape::rope(const Var& x, int rot_dims, float base) {
  check_input(x, "rope");
  Var y = make(x.shape(), "rope out");
  if (!measuring()) ops::rope_forward(x.t, y.t, rot_dims, base);
  record([this, x, y, rot_dims, base] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::rope_backward(grad_of(y), dx.t, rot_dims, base);
    end_grad(x, dx);
  }, {});
  return y;
}

Var Tape::mul_head(const Var& x, Param& gain, const Tensor& expand) {
  int64_t H = gain.value.numel(), C = x.t.dim(1);
  PG_CHECK(x.t.ndim() == 2 && expand.dim(0) == H && expand.dim(1) == C,
           "mul_head {}: input {} and expansion {} do not fit {} heads", gain.spec.name, x.t.desc(), expand.desc(), H);
  // The per-head gain broadcast to a per-channel vector (1, C) = gain (1, H) @ expand (H, C).
  const int x_buf = value_of(x, "mul_head");
  int g_buf = -1;
  Tensor g = alloc_saved(Shape{1, C}, DType::F32, "head gain", &g_buf);
  Var y = make(x.shape(), "mul_head out");
  if (!measuring()) {
    ops::matmul(gain.value.view(Shape{1, H}), ops::Trans::N, expand, ops::Trans::N, g);
    ops::mul_channel(x.t, g.view(Shape{C}), y.t);
  }
  record([this, x, y, g, &gain, expand, H, C] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    Arena::Block dg = arena_.alloc_block(Shape{C}, DType::F32, "head gain grad");
    if (!measuring()) {
      dg.t.zero_();
      ops::channel_dot_accum(dy, x.t, dg.t);
      ops::matmul(dg.t.view(Shape{1, C}), ops::Trans::N, expand, ops::Trans::T, gain.grad.view(Shape{1, H}), 1.f, 1.f);
    }
    give_back(dg);
    if (!needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::mul_channel(dy, g.view(Shape{C}), dx.t);
    end_grad(x, dx);
  }, {x_buf, g_buf});
  return y;
}

Var Tape::attention(const Var& q, const Var& k, const Var& v, const ops::AttnParams& p) {
  const Shape& qs = q.shape();
  const int q_buf = value_of(q, "attention"), k_buf = value_of(k, "attention"), v_buf = value_of(v, "attention");
  Var y = make(qs, "attention out");
  int lse_buf = -1;
  Tensor lse = alloc_saved(Shape{qs[0], qs[2], qs[1]}, DType::F32, "attention lse", &lse_buf);
  if (!measuring()) ops::attention_forward(q.t, k.t, v.t, Tensor(), y.t, lse, p);
  record([this, q, k, v, y, lse, p] {
    if (!has_grad(y)) return;
    // attention_backward writes all three gradients; a constant input gets a scratch buffer
    // (a temporary that end_grad-like handling gives back).
    auto sink = [this](const Var& x) {
      if (needs_grad(x)) return begin_grad(x);
      Arena::Block b = arena_.alloc_block(x.shape(), x.t.dtype(), "attention scratch grad");
      return GradSink{b.t, true, b};
    };
    auto finish = [this](const Var& x, const GradSink& g) {
      if (needs_grad(x))
        end_grad(x, g);
      else
        give_back(g.block);
    };
    GradSink dq = sink(q), dk = sink(k), dv = sink(v);
    if (!measuring())
      ops::attention_backward(q.t, k.t, v.t, Tensor(), y.t, lse, grad_of(y), dq.t, dk.t, dv.t, p);
    // Reverse order of allocation, so the temporaries leave no holes behind.
    finish(v, dv);
    finish(k, dk);
    finish(q, dq);
  }, {q_buf, k_buf, v_buf, value_of(y, "attention"), lse_buf});
  return y;
}

Var Tape::activation(const Var& x, ops::Act act, float slope) {
  const int x_buf = value_of(x, "activation");
  Var y = make(x.shape(), "activation out");
  if (!measuring()) ops::activation_forward(act, x.t, y.t, slope);
  record([this, x, y, act, slope] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::activation_backward(act, x.t, grad_of(y), dx.t, slope);
    end_grad(x, dx);
  }, {x_buf});
  return y;
}

Var Tape::add_mul_channel(const Var& x, const ChanParam& s, const Var& f) {
  check_input(x, "add_mul_channel");
  const int f_buf = value_of(f, "add_mul_channel");
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
    pass_grad(x, y);
  }, {f_buf});
  return y;
}

Var Tape::mix_channel(const ChanParam& s0, const Var& x0, const ChanParam& s1, const Var& x1) {
  const int x0_buf = value_of(x0, "mix_channel"), x1_buf = value_of(x1, "mix_channel");
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
  }, {x0_buf, x1_buf});
  return y;
}

void Tape::softcap_cross_entropy(const Var& logits, const Tensor& targets, float cap, const Tensor& losses,
                                 float grad_scale) {
  check_input(logits, "softcap_cross_entropy");
  bool grad = needs_grad(logits);
  // The logits are not needed by any backward (the head's linear reads h and E), so dlogits
  // overwrite them in place: fp32 logits for the whole batch never coexist with their gradient.
  if (!measuring()) ops::softcap_cross_entropy(logits.t, targets, cap, losses, grad ? logits.t : Tensor(), grad_scale);
  if (!grad) return;
  Node& n = nodes_[static_cast<size_t>(logits.node)];
  PG_CHECK(!n.has_grad, "softcap_cross_entropy: logits already have a gradient");
  n.grad = logits.t.view(n.shape);
  n.has_grad = true;
  // The logits' buffer now holds their gradient: it lives until the head's backward consumed it.
  n.grad_buf = n.value_buf;
  if (n.grad_buf >= 0) hold(n.grad_buf);
}

}  // namespace pgolf::model
