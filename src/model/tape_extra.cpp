// Tape wrappers of the record-stack ops (TECHNIQUES.md §5): XSA, SmearGate v1/v2, per-channel and
// scalar mixes. Same conventions as tape.cpp: outputs from the Arena, closures declare what they read.
#include <string>

#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/scalar_mix.h"
#include "ops/smear.h"
#include "ops/xsa.h"

namespace pgolf::model {

ChanParam scalar_at(Param& p, int64_t index) {
  const Shape flat{p.value.numel()};
  PG_CHECK(index >= 0 && index < flat[0], "scalar_at: index {} outside parameter {} {}", index, p.spec.name,
           p.value.desc());
  return ChanParam{p.value.view(flat).slice(index, index + 1),
                   p.grad.defined() ? p.grad.view(flat).slice(index, index + 1) : Tensor()};
}

Var Tape::xsa(const Var& y, const Var& v) {
  const prof::Scope timer = fwd_scope(std::string("xsa"));
  const int y_buf = value_of(y, "xsa"), v_buf = value_of(v, "xsa");
  Var out = make(y.shape(), "xsa out");
  if (!measuring()) ops::xsa_forward(y.t, v.t, out.t);
  record([this, y, v, out] {
    if (!has_grad(out) || (!needs_grad(y) && !needs_grad(v))) return;
    // xsa_backward writes both gradients; one nobody wants goes to a scratch buffer.
    GradSink dy = begin_grad_or_scratch(y), dv = begin_grad_or_scratch(v);
    if (!measuring()) ops::xsa_backward(y.t, v.t, grad_of(out), dy.t, dv.t);
    end_grad_or_scratch(v, dv);
    end_grad_or_scratch(y, dy);
  }, {y_buf, v_buf});
  return out;
}

Var Tape::smear_v1(const Var& x, Param& gate, int64_t T) {
  const prof::Scope timer = fwd_scope(std::string("smear_v1"));
  PG_CHECK(x.t.ndim() == 2 && T > 0 && x.t.dim(0) % T == 0, "smear_v1: input {} is not (B*T, C) with T = {}",
           x.t.desc(), T);
  const Shape btc{x.t.dim(0) / T, T, x.t.dim(1)};
  const int x_buf = value_of(x, "smear_v1");
  Var y = make(x.shape(), "smear_v1 out");
  if (!measuring()) ops::smear_v1_forward(x.t.view(btc), gate.value, y.t.view(btc));
  record([this, x, y, &gate, btc] {
    if (!has_grad(y)) return;
    GradSink dx;
    Arena::Block scratch;
    if (needs_grad(x)) {
      dx = begin_grad(x);
    } else {
      scratch = arena_.alloc_block(x.shape(), x.t.dtype(), "smear_v1 scratch grad");
      dx = GradSink{scratch.t, true, scratch};
    }
    Arena::Block gscratch;
    const Tensor dgate = param_grad_or_scratch(gate.grad, gate.value, &gscratch);
    if (!measuring()) ops::smear_v1_backward(x.t.view(btc), gate.value, grad_of(y).view(btc), dx.t.view(btc), dgate);
    give_scratch(gscratch);
    if (needs_grad(x))
      end_grad(x, dx);
    else
      give_back(scratch);
  }, {x_buf});
  return y;
}

Var Tape::smear_v2(const Var& e, const Tensor& ids, Param& w, Param& lambda, int bos) {
  const prof::Scope timer = fwd_scope(std::string("smear_v2"));
  PG_CHECK(e.t.ndim() == 2 && ids.ndim() == 2 && ids.numel() == e.t.dim(0),
           "smear_v2: input {} is not (B*T, C) for ids {}", e.t.desc(), ids.desc());
  const Shape btc{ids.dim(0), ids.dim(1), e.t.dim(1)};
  const int e_buf = value_of(e, "smear_v2");
  Var y = make(e.shape(), "smear_v2 out");
  if (!measuring()) ops::smear_v2_forward(e.t.view(btc), ids, w.value, lambda.value, bos, y.t.view(btc));
  record([this, e, y, ids, &w, &lambda, bos, btc] {
    if (!has_grad(y)) return;
    GradSink de;
    Arena::Block scratch;
    if (needs_grad(e)) {
      de = begin_grad(e);
    } else {
      scratch = arena_.alloc_block(e.shape(), e.t.dtype(), "smear_v2 scratch grad");
      de = GradSink{scratch.t, true, scratch};
    }
    Arena::Block w_scratch, l_scratch;
    const Tensor dw = param_grad_or_scratch(w.grad, w.value, &w_scratch);
    const Tensor dl = param_grad_or_scratch(lambda.grad, lambda.value, &l_scratch);
    if (!measuring())
      ops::smear_v2_backward(e.t.view(btc), ids, w.value, lambda.value, bos, grad_of(y).view(btc), de.t.view(btc), dw, dl);
    give_scratch(l_scratch);
    give_scratch(w_scratch);
    if (needs_grad(e))
      end_grad(e, de);
    else
      give_back(scratch);
  }, {e_buf});
  return y;
}

Var Tape::mul_channel(const Var& x, const ChanParam& s) {
  const prof::Scope timer = fwd_scope(std::string("mul_channel"));
  const int x_buf = value_of(x, "mul_channel");
  Var y = make(x.shape(), "mul_channel out", DType::F32);
  if (!measuring()) ops::mul_channel(x.t, s.value, y.t);
  record([this, x, s, y] {
    if (!has_grad(y)) return;
    const Tensor dy = grad_of(y);
    if (!measuring() && s.grad.defined()) ops::channel_dot_accum(dy, x.t, s.grad);
    if (!needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    if (!measuring()) ops::mul_channel(dy, s.value, dx.t);
    end_grad(x, dx);
  }, {x_buf});
  return y;
}

Var Tape::scalar_mix(const std::vector<ScalarTerm>& terms, DType out_dtype) {
  const prof::Scope timer = fwd_scope(std::string("scalar_mix"));
  PG_CHECK(!terms.empty() && terms.size() <= static_cast<size_t>(ops::kMaxMixTerms), "scalar_mix: {} terms (1..{})",
           terms.size(), ops::kMaxMixTerms);
  int bufs[ops::kMaxMixTerms] = {-1, -1, -1};
  std::vector<ops::MixTerm> fwd;
  for (size_t i = 0; i < terms.size(); ++i) {
    PG_CHECK(terms[i].x.t.numel() == terms[0].x.t.numel(), "scalar_mix: term {} is {} but term 0 is {}", i,
             terms[i].x.t.desc(), terms[0].x.t.desc());
    bufs[i] = value_of(terms[i].x, "scalar_mix");
    fwd.push_back(ops::MixTerm{terms[i].s.value, terms[i].x.t, Tensor(), Tensor()});
  }
  Var y = make(terms[0].x.shape(), "scalar_mix out", out_dtype);
  if (!measuring()) ops::scalar_mix_forward(fwd, y.t);
  record([this, terms, y] {
    if (!has_grad(y)) return;
    std::vector<ops::MixTerm> bwd;
    std::vector<GradSink> sinks(terms.size());
    for (size_t i = 0; i < terms.size(); ++i) {
      const ScalarTerm& t = terms[i];
      if (needs_grad(t.x)) sinks[i] = begin_grad(t.x);
      bwd.push_back(ops::MixTerm{t.s.value, t.x.t, sinks[i].t, t.s.grad});
    }
    if (!measuring()) ops::scalar_mix_backward(bwd, grad_of(y));
    for (size_t i = terms.size(); i-- > 0;)
      if (needs_grad(terms[i].x)) end_grad(terms[i].x, sinks[i]);
  }, {bufs[0], bufs[1], bufs[2]});
  return y;
}

}  // namespace pgolf::model
