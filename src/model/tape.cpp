#include "model/tape.h"

#include "core/profile.h"
#include "ops/channel_grad.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/qk_prep.h"
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

// "blocks.3.attn.c_q.weight" -> "blocks.attn.c_q": one profiler row per role, not per layer.
std::string weight_role(const std::string& name) {
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    size_t j = name.find('.', i);
    if (j == std::string::npos) j = name.size();
    const std::string part = name.substr(i, j - i);
    const bool number = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (!number && part != "weight") out += (out.empty() ? "" : ".") + part;
    i = j + 1;
  }
  return out;
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

Tape::GradSink Tape::begin_grad_or_scratch(const Var& x) {
  if (needs_grad(x)) return begin_grad(x);
  Arena::Block b = arena_.alloc_block(x.shape(), x.t.dtype(), "scratch grad");
  return GradSink{b.t, true, b};
}

void Tape::end_grad_or_scratch(const Var& x, const GradSink& g) {
  if (needs_grad(x))
    end_grad(x, g);
  else
    give_back(g.block);
}

Tensor Tape::grad_into(const Var& x, bool* accumulate) {
  *accumulate = has_grad(x);
  if (*accumulate) return grad_of(x);
  return begin_grad(x).t;  // the first contribution: the node's own buffer, never a temporary
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
  steps_.push_back(Step{std::move(fn), std::move(unrecorded_outputs_), {}, std::move(op_label_)});
  op_label_.clear();
  unrecorded_outputs_.clear();
}

void Tape::on_backward(std::function<void()> fn) {
  if (!record_) return;
  steps_.push_back(Step{[this, f = std::move(fn)] {
                          if (!measuring()) f();
                        },
                        {}, {}, prof::enabled() ? std::string("grad_ready") : std::string()});
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
    {
      const prof::Scope timer("bwd:", st.label);
      st.fn();
    }
    st.fn = nullptr;
    for (int node : st.outputs) drop_grad(node);  // consumed by the op that produced the node
    for (int buf : st.dead_values) drop_value(buf);
  }
  steps_.clear();
  // Gradients of nodes no op produced (none today) and of the terminal op are given back too.
  for (size_t n = 0; n < nodes_.size(); ++n) drop_grad(static_cast<int>(n));
}

Tensor Tape::param_grad_or_scratch(const Tensor& grad, const Tensor& value, Arena::Block* scratch) {
  if (grad.defined()) return grad;
  *scratch = arena_.alloc_block(value.shape(), DType::F32, "frozen parameter scratch grad");
  return scratch->t;
}

Var Tape::embedding(const Tensor& ids, Param& table) {
  const prof::Scope timer = fwd_scope(std::string("embedding"));
  const Tensor& w = table.compute.defined() ? table.compute : table.value;
  Var y = make(Shape{ids.numel(), w.dim(1)}, "embedding out");
  if (!measuring()) ops::embedding_forward(ids, w, y.t);
  record([this, ids, y, &table] {
    if (!has_grad(y) || measuring() || !table.grad.defined()) return;  // undefined: frozen
    ops::embedding_backward(ids, grad_of(y), table.grad);
  }, {});
  return y;
}

Var Tape::rmsnorm(const Var& x) {
  const prof::Scope timer = fwd_scope(std::string("rmsnorm"));
  Shape rc = rows_by_last(x.shape());
  const int x_buf = value_of(x, "rmsnorm");
  Var y = make(x.shape(), "rmsnorm out");
  int rstd_buf = -1;
  Tensor rstd = alloc_saved(Shape{rc[0]}, DType::F32, "rmsnorm rstd", &rstd_buf);
  if (!measuring()) ops::rmsnorm_forward(x.t.view(rc), Tensor(), y.t.view(rc), rstd, eps_);
  // The backward reads the output (kept anyway for the matmul after the norm), not x: the f32 residual
  // stream feeding a norm need not stay alive for it (ops/rmsnorm.h, memory-efficient form).
  (void)x_buf;
  const int y_buf = value_of(y, "rmsnorm");
  record([this, x, y, rstd, rc] {
    if (!has_grad(y) || !needs_grad(x)) return;
    bool acc = false;  // the residual's gradient usually exists already: add into it, no temporary
    const Tensor dx = grad_into(x, &acc);
    if (!measuring()) ops::rmsnorm_backward_from_output(y.t.view(rc), rstd, grad_of(y).view(rc), dx.view(rc), acc);
  }, {y_buf, rstd_buf});
  return y;
}

Tape::LinearInputHook& Tape::linear_input_hook() {
  thread_local LinearInputHook hook;
  return hook;
}

Var Tape::linear(const Var& x, Param& w) {
  const prof::Scope timer = fwd_scope(prof::enabled() ? "linear " + weight_role(w.spec.name) : std::string());
  const Tensor& wt = matmul_weight(w, act_);
  PG_CHECK(x.t.ndim() == 2 && x.t.dim(1) == wt.dim(1) && x.t.dtype() == wt.dtype(),
           "linear {}: input {} does not match weight {}", w.spec.name, x.t.desc(), wt.desc());
  const int x_buf = value_of(x, "linear");
  Var y = make(Shape{x.t.dim(0), wt.dim(0)}, "linear out");
  if (!measuring()) ops::linear_forward(x.t, wt, y.t);
  if (!measuring() && linear_input_hook()) linear_input_hook()(w.spec.name, x.t);
  record([this, x, y, &w, wt] {
    if (!has_grad(y)) return;
    // An input read by several linears (q, k, v) gets the later contributions added by the GEMM itself.
    bool acc = false;
    const Tensor dx = needs_grad(x) ? grad_into(x, &acc) : Tensor();
    if (!measuring()) ops::linear_backward(x.t, wt, grad_of(y), dx, w.grad, acc);
  }, {x_buf});
  return y;
}

Var Tape::act_linear(const Var& h, ops::Act act, float slope, Param& w, bool keep_act) {
  const prof::Scope timer = fwd_scope(prof::enabled() ? "act_linear " + weight_role(w.spec.name) : std::string());
  const Tensor& wt = matmul_weight(w, act_);
  PG_CHECK(h.t.ndim() == 2 && h.t.dim(1) == wt.dim(1) && h.t.dtype() == wt.dtype(),
           "act_linear {}: input {} does not match weight {}", w.spec.name, h.t.desc(), wt.desc());
  const int h_buf = value_of(h, "act_linear");
  Var y = make(Shape{h.t.dim(0), wt.dim(0)}, "act_linear out");
  // Kept: act(h) lives until the backward, which then skips recomputing it. Without a tape (forward only)
  // there is no backward, so keeping would only cost memory.
  const bool keep = keep_act && record_;
  int a_buf = -1;
  Tensor kept;
  {
    Arena::Block a;
    if (keep)
      kept = alloc_saved(h.shape(), act_, "act_linear act(h) kept", &a_buf);
    else
      a = arena_.alloc_block(h.shape(), act_, "act_linear act(h)");
    const Tensor& at = keep ? kept : a.t;
    if (!measuring()) {
      ops::activation_forward(act, h.t, at, slope);
      ops::linear_forward(at, wt, y.t);
      if (linear_input_hook()) linear_input_hook()(w.spec.name, at);
    }
    if (!keep) give_back(a);
  }
  record([this, h, y, act, slope, &w, wt, keep, kept] {
    if (!has_grad(y)) return;
    Arena::Block a;
    if (!keep) a = arena_.alloc_block(h.shape(), act_, "act_linear act(h) again");
    Arena::Block da = arena_.alloc_block(h.shape(), act_, "act_linear d act");
    const Tensor& at = keep ? kept : a.t;
    if (!measuring()) {
      if (!keep) ops::activation_forward(act, h.t, a.t, slope);
      ops::linear_backward(at, wt, grad_of(y), needs_grad(h) ? da.t : Tensor(), w.grad);
    }
    if (!keep) give_back(a);
    if (needs_grad(h)) {
      GradSink dh = begin_grad(h);
      if (!measuring()) ops::activation_backward(act, h.t, da.t, dh.t, slope);
      end_grad(h, dh);
    }
    give_back(da);
  }, {h_buf, a_buf});  // a_buf = -1 (nothing to hold) unless kept
  return y;
}

Var Tape::rope(const Var& x, int rot_dims, float base) {
  const prof::Scope timer = fwd_scope(std::string("rope"));
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

Var Tape::qk_prep(const Var& x, Param* gain, int rot_dims, float base) {
  const prof::Scope timer = fwd_scope(std::string("qk_prep"));
  PG_CHECK(x.t.ndim() == 4, "qk_prep: input {} is not (B, T, H, D)", x.t.desc());
  PG_CHECK(gain == nullptr || gain->value.numel() == x.t.dim(2), "qk_prep: gain {} has {} values for {} heads",
           gain ? gain->spec.name : std::string(), gain ? gain->value.numel() : 0, x.t.dim(2));
  const int x_buf = value_of(x, "qk_prep");
  int r_buf = -1;
  Tensor rstd = alloc_saved(Shape{x.t.dim(0) * x.t.dim(1) * x.t.dim(2)}, DType::F32, "qk_prep rstd", &r_buf);
  Var y = make(x.shape(), "qk_prep out");
  const Tensor g = gain ? gain->value.view(Shape{gain->value.numel()}) : Tensor();
  if (!measuring()) ops::qk_prep_forward(x.t, g, y.t, rstd, rot_dims, base, eps_);
  record([this, x, y, rstd, gain, g, rot_dims, base] {
    if (!has_grad(y)) return;
    if (!needs_grad(x)) {
      PG_CHECK(gain == nullptr || !gain->grad.defined(),
               "qk_prep: a gain gradient without an input gradient is not supported");
      return;
    }
    GradSink dx = begin_grad(x);
    Arena::Block scratch;  // the kernel always reduces the gain's gradient: a frozen gain's lands here
    const Tensor dg = gain ? param_grad_or_scratch(gain->grad, gain->value, &scratch).view(Shape{gain->value.numel()})
                           : Tensor();
    if (!measuring()) ops::qk_prep_backward(x.t, g, rstd, grad_of(y), dx.t, dg, rot_dims, base);
    give_scratch(scratch);
    end_grad(x, dx);
  }, {x_buf, r_buf});
  return y;
}

Var Tape::mul_head(const Var& x, Param& gain, const Tensor& expand) {
  const prof::Scope timer = fwd_scope(std::string("mul_head"));
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
    if (gain.grad.defined()) {  // undefined: a frozen gain (or a constant one, GPT's LN scales), no reduction
      Arena::Block dg = arena_.alloc_block(Shape{C}, DType::F32, "head gain grad");
      if (!measuring()) {
        dg.t.zero_();
        ops::channel_dot_accum(dy, x.t, dg.t);
        ops::matmul(dg.t.view(Shape{1, C}), ops::Trans::N, expand, ops::Trans::T, gain.grad.view(Shape{1, H}), 1.f, 1.f);
      }
      give_back(dg);
    }
    if (!needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::mul_channel(dy, g.view(Shape{C}), dx.t);
    end_grad(x, dx);
  }, {x_buf, g_buf});
  return y;
}

Var Tape::attention(const Var& q, const Var& k, const Var& v, const ops::AttnParams& p, const Tensor& doc_start) {
  const prof::Scope timer = fwd_scope(std::string("attention"));
  const Shape& qs = q.shape();
  const int q_buf = value_of(q, "attention"), k_buf = value_of(k, "attention"), v_buf = value_of(v, "attention");
  Var y = make(qs, "attention out");
  int lse_buf = -1;
  Tensor lse = alloc_saved(Shape{qs[0], qs[2], qs[1]}, DType::F32, "attention lse", &lse_buf);
  if (!measuring()) ops::attention_forward(q.t, k.t, v.t, doc_start, y.t, lse, p);
  record([this, q, k, v, y, lse, p, doc_start] {
    if (!has_grad(y)) return;
    // attention_backward writes all three gradients; a constant input gets a scratch buffer.
    GradSink dq = begin_grad_or_scratch(q), dk = begin_grad_or_scratch(k), dv = begin_grad_or_scratch(v);
    if (!measuring())
      ops::attention_backward(q.t, k.t, v.t, doc_start, y.t, lse, grad_of(y), dq.t, dk.t, dv.t, p);
    // Reverse order of allocation, so the temporaries leave no holes behind.
    end_grad_or_scratch(v, dv);
    end_grad_or_scratch(k, dk);
    end_grad_or_scratch(q, dq);
  }, {q_buf, k_buf, v_buf, value_of(y, "attention"), lse_buf});
  return y;
}

Var Tape::activation(const Var& x, ops::Act act, float slope) {
  const prof::Scope timer = fwd_scope(std::string("activation"));
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
  const prof::Scope timer = fwd_scope(std::string("add_mul_channel"));
  check_input(x, "add_mul_channel");
  const int f_buf = value_of(f, "add_mul_channel");
  Var y = make(x.shape(), "add_mul_channel out", DType::F32);
  if (!measuring()) ops::add_mul_channel(x.t, s.value, f.t, y.t);
  record([this, x, s, f, y] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    // Everything that reads dy runs before pass_grad, which may hand dy's buffer on to x.
    bool acc = false;
    const Tensor df = needs_grad(f) ? grad_into(f, &acc) : Tensor();
    Arena::Block scratch;
    const Tensor ds = param_grad_or_scratch(s.grad, s.value, &scratch);
    if (!measuring()) ops::channel_scale_backward(dy, s.value, f.t, ds, df, acc);
    give_scratch(scratch);
    pass_grad(x, y);
  }, {f_buf});
  return y;
}

Var Tape::mix_channel(const ChanParam& s0, const Var& x0, const ChanParam& s1, const Var& x1) {
  const prof::Scope timer = fwd_scope(std::string("mix_channel"));
  const int x0_buf = value_of(x0, "mix_channel"), x1_buf = value_of(x1, "mix_channel");
  Var y = make(x0.shape(), "mix_channel out", DType::F32);
  if (!measuring()) ops::mix_channel(s0.value, x0.t, s1.value, x1.t, y.t);
  record([this, s0, x0, s1, x1, y] {
    if (!has_grad(y)) return;
    Tensor dy = grad_of(y);
    // One pass over dy per input: ds_i += sum dy x_i and dx_i (=|+=) s_i dy.
    for (const auto& [x, s] : {std::pair{x0, s0}, std::pair{x1, s1}}) {
      bool acc = false;
      const Tensor dx = needs_grad(x) ? grad_into(x, &acc) : Tensor();
      Arena::Block scratch;
      const Tensor ds = param_grad_or_scratch(s.grad, s.value, &scratch);
      if (!measuring()) ops::channel_scale_backward(dy, s.value, x.t, ds, dx, acc);
      give_scratch(scratch);
    }
  }, {x0_buf, x1_buf});
  return y;
}

void Tape::softcap_cross_entropy(const Var& logits, const Tensor& targets, float cap, const Tensor& losses,
                                 float grad_scale) {
  const prof::Scope timer("fwd+bwd:", std::string("softcap_cross_entropy"));
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
