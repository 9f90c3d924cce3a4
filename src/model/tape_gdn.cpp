// Tape wrappers of the GatedDeltaNet ops (TECHNIQUES.md §5.18; ops/gdn.h, docs/GDN.md) and of the two
// small pieces of the GDN layer built from existing ops: the per-head L2 normalisation of q and k (the fused
// qk_prep op without RoPE) and the SiLU output gate (elementwise mul + sigmoid gate). Same conventions as
// tape.cpp: outputs from the Arena, closures declare what they read, measuring mode allocates only.
#include <cmath>
#include <string>

#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/gdn.h"
#include "ops/qk_prep.h"

namespace pgolf::model {

Var Tape::short_conv(const Var& x, Param& w, bool silu) {
  const prof::Scope timer = fwd_scope(std::string("short_conv"));
  PG_CHECK(x.t.ndim() == 3 && w.value.ndim() == 2 && w.value.dim(0) == x.t.dim(2),
           "short_conv {}: input {} is not (B, T, C) for the weight {} (C, K)", w.spec.name, x.t.desc(),
           w.value.desc());
  const int x_buf = value_of(x, "short_conv");
  Var y = make(x.shape(), "short_conv out");
  if (!measuring()) ops::short_conv_forward(x.t, w.value, y.t, silu);
  record([this, x, y, &w, silu] {
    if (!has_grad(y)) return;
    // The op writes dx in every case (and accumulates dw): a constant x gets a scratch buffer.
    GradSink dx = begin_grad_or_scratch(x);
    Arena::Block scratch;
    const Tensor dw = param_grad_or_scratch(w.grad, w.value, &scratch);
    if (!measuring()) ops::short_conv_backward(x.t, w.value, grad_of(y), dx.t, dw, silu);
    give_scratch(scratch);
    end_grad_or_scratch(x, dx);
  }, {x_buf});
  return y;
}

Var Tape::l2norm_heads(const Var& x, float scale) {
  const prof::Scope timer = fwd_scope(std::string("l2norm_heads"));
  PG_CHECK(x.t.ndim() == 4, "l2norm_heads: input {} is not (B, T, H, D)", x.t.desc());
  const int64_t H = x.t.dim(2), D = x.t.dim(3);
  // qk_prep computes gain * x / sqrt(mean_D(x^2) + eps); with eps = 1e-6 / D and gain = scale / sqrt(D) that
  // is scale * x / sqrt(sum_D x^2 + 1e-6), the L2 normalisation of §5.18 (FLA's l2norm, eps 1e-6).
  const float eps = 1e-6f / static_cast<float>(D), gain_value = scale / std::sqrt(static_cast<float>(D));
  const int x_buf = value_of(x, "l2norm_heads");
  int r_buf = -1, g_buf = -1;
  Tensor rstd = alloc_saved(Shape{x.t.numel() / D}, DType::F32, "l2norm rstd", &r_buf);
  Tensor gain = alloc_saved(Shape{H}, DType::F32, "l2norm gain", &g_buf);
  Var y = make(x.shape(), "l2norm out");
  if (!measuring()) {
    ops::fill(gain, gain_value);
    ops::qk_prep_forward(x.t, gain, y.t, rstd, /*rot_dims=*/0, /*base=*/10000.f, eps);
  }
  record([this, x, y, rstd, gain, H] {
    if (!has_grad(y) || !needs_grad(x)) return;
    GradSink dx = begin_grad(x);
    // The gain is a constant: its gradient goes to a throwaway buffer.
    Arena::Block dgain = arena_.alloc_block(Shape{H}, DType::F32, "l2norm gain grad (unused)");
    if (!measuring()) ops::qk_prep_backward(x.t, gain, rstd, grad_of(y), dx.t, dgain.t, 0, 10000.f);
    give_back(dgain);
    end_grad(x, dx);
  }, {x_buf, r_buf, g_buf});
  return y;
}

std::pair<Var, Var> Tape::gdn_gates(const Var& a, const Var& bb, Param& A_log, Param& dt_bias, float beta_scale) {
  const prof::Scope timer = fwd_scope(std::string("gdn_gates"));
  PG_CHECK(a.t.ndim() == 3 && bb.shape() == a.shape(), "gdn_gates: a {} and bb {} must be the same (B, T, H)",
           a.t.desc(), bb.t.desc());
  const int a_buf = value_of(a, "gdn_gates"), b_buf = value_of(bb, "gdn_gates");
  Var g = make(a.shape(), "gdn log decay", DType::F32);
  Var beta = make(a.shape(), "gdn beta", DType::F32);
  const Shape h{A_log.value.numel()};
  if (!measuring())
    ops::gdn_gates_forward(a.t, bb.t, A_log.value.view(h), dt_bias.value.view(h), g.t, beta.t, beta_scale);
  record([this, a, bb, g, beta, &A_log, &dt_bias, beta_scale, h] {
    if (!has_grad(g) && !has_grad(beta)) return;
    // The op reads both output gradients: a missing one is a zero buffer.
    Arena::Block zero;
    const bool need_zero = !has_grad(g) || !has_grad(beta);
    if (need_zero) {
      zero = arena_.alloc_block(a.shape(), DType::F32, "gdn_gates zero grad");
      if (!measuring()) zero.t.zero_();
    }
    const Tensor dg = has_grad(g) ? grad_of(g) : zero.t, dbeta = has_grad(beta) ? grad_of(beta) : zero.t;
    GradSink da = begin_grad_or_scratch(a), dbb = begin_grad_or_scratch(bb);
    Arena::Block scratch_a, scratch_dt;
    const Tensor dA = param_grad_or_scratch(A_log.grad, A_log.value, &scratch_a).view(h);
    const Tensor ddt = param_grad_or_scratch(dt_bias.grad, dt_bias.value, &scratch_dt).view(h);
    if (!measuring())
      ops::gdn_gates_backward(a.t, bb.t, A_log.value.view(h), dt_bias.value.view(h), dg, dbeta, da.t, dbb.t, dA, ddt,
                              beta_scale);
    give_scratch(scratch_dt);
    give_scratch(scratch_a);
    end_grad_or_scratch(bb, dbb);
    end_grad_or_scratch(a, da);
    if (need_zero) give_back(zero);
  }, {a_buf, b_buf});
  return {g, beta};
}

Var Tape::gdn_chunk(const Var& q, const Var& k, const Var& v, const Var& g, const Var& beta, int chunk) {
  const prof::Scope timer = fwd_scope(std::string("gdn_chunk"));
  PG_CHECK(q.t.ndim() == 4 && v.t.ndim() == 4, "gdn_chunk: q {} and v {} must be (B, T, H, D)", q.t.desc(),
           v.t.desc());
  const int q_buf = value_of(q, "gdn_chunk"), k_buf = value_of(k, "gdn_chunk"), v_buf = value_of(v, "gdn_chunk");
  const int g_buf = value_of(g, "gdn_chunk"), b_buf = value_of(beta, "gdn_chunk");
  const int64_t B = q.t.dim(0), T = q.t.dim(1), H = q.t.dim(2), Dk = q.t.dim(3), Dv = v.t.dim(3);
  PG_CHECK(chunk >= 1, "gdn_chunk: chunk {} must be >= 1", chunk);
  int s_buf = -1;
  Tensor states = alloc_saved(Shape{B, H, ops::gdn_num_chunks(T, chunk), Dk, Dv}, DType::F32, "gdn chunk states",
                              &s_buf);
  Var o = make(v.shape(), "gdn out");
  if (!measuring()) ops::gdn_chunk_forward(q.t, k.t, v.t, g.t, beta.t, Tensor(), o.t, states, Tensor(), chunk);
  record([this, q, k, v, g, beta, o, states, chunk] {
    if (!has_grad(o)) return;
    // The op writes all five input gradients: constants get scratch buffers.
    GradSink dq = begin_grad_or_scratch(q), dk = begin_grad_or_scratch(k), dv = begin_grad_or_scratch(v);
    GradSink dg = begin_grad_or_scratch(g), db = begin_grad_or_scratch(beta);
    if (!measuring())
      ops::gdn_chunk_backward(q.t, k.t, v.t, g.t, beta.t, states, grad_of(o), Tensor(), dq.t, dk.t, dv.t, dg.t, db.t,
                              Tensor(), chunk);
    // Reverse order of allocation, so the temporaries leave no holes behind.
    end_grad_or_scratch(beta, db);
    end_grad_or_scratch(g, dg);
    end_grad_or_scratch(v, dv);
    end_grad_or_scratch(k, dk);
    end_grad_or_scratch(q, dq);
  }, {q_buf, k_buf, v_buf, g_buf, b_buf, s_buf});
  return o;
}

Var Tape::silu_gate(const Var& y, const Var& z) {
  const prof::Scope timer = fwd_scope(std::string("silu_gate"));
  PG_CHECK(y.t.numel() == z.t.numel(), "silu_gate: y {} and z {} differ in size", y.t.desc(), z.t.desc());
  const int y_buf = value_of(y, "silu_gate"), z_buf = value_of(z, "silu_gate");
  Var out = make(y.shape(), "silu_gate out");
  const Tensor zv = z.t.view(y.shape());
  if (!measuring()) {
    ops::mul(zv, y.t, out.t);                  // z y
    ops::sigmoid_gate_forward(zv, out.t, out.t);  // sigmoid(z) z y = y SiLU(z)
  }
  record([this, y, z, zv, out] {
    if (!has_grad(out)) return;
    const Shape& s = y.shape();
    // With p = z y and out = sigmoid(z) p: dp = sigmoid(z) dout, dz = dout p s(1 - s) + dp y, dy = dp z.
    Arena::Block dz32 = arena_.alloc_block(s, DType::F32, "silu_gate dz (f32)");
    Arena::Block dp = arena_.alloc_block(s, act_, "silu_gate dp");
    {
      Arena::Block p = arena_.alloc_block(s, act_, "silu_gate z y");
      if (!measuring()) {
        ops::mul(zv, y.t, p.t);
        dz32.t.zero_();
        ops::sigmoid_gate_backward(zv, p.t, grad_of(out), dp.t, dz32.t);
      }
      give_back(p);
    }
    if (needs_grad(y)) {
      GradSink dy = begin_grad(y);
      if (!measuring()) ops::mul(dp.t, zv, dy.t);
      end_grad(y, dy);
    }
    if (needs_grad(z)) {
      GradSink dz = begin_grad(z);
      if (!measuring()) {
        ops::mul(dp.t, y.t, dp.t);  // dp y
        ops::add(dz32.t, dp.t, dz.t.view(s));
      }
      end_grad(z, dz);
    }
    give_back(dp);
    give_back(dz32);
  }, {y_buf, z_buf});
  return out;
}

}  // namespace pgolf::model
