// Parity cases of the GatedDeltaNet ops (TECHNIQUES.md §5.18, src/ops/gdn.h): the chunked forward and
// backward, the recurrent form and the short convolution. Inputs look like the layer's: q, k of norm
// about 1 (q also / sqrt(Dk)), log decays g in [-1, -0.01], write strengths beta in (0, 2).
#include <cmath>

#include "ops/gdn.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;
// The chunked recurrence chains several fp32 reductions per chunk; CPU and GPU sum in different orders.
constexpr double kTolGdnF32 = 1e-4;

struct G {
  int64_t B, T, H, Dk, Dv;
  int C;
  bool big;
};

struct GdnIn {
  int q, k, v, g, beta;
};

GdnIn add_inputs(Builder& b, const G& d, DType dt) {
  const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H};
  const float kstd = 1.f / std::sqrt(static_cast<float>(d.Dk));
  GdnIn r{};
  r.q = b.add("q", b.in.normal(sq, dt, kstd / std::sqrt(static_cast<float>(d.Dk))));
  r.k = b.add("k", b.in.normal(sq, dt, kstd));
  r.v = b.add("v", b.in.normal(sv, dt));
  r.g = b.add("g", b.in.uniform(sg, kF, -1.f, -0.01f));
  r.beta = b.add("beta", b.in.uniform(sg, kF, 0.05f, 1.95f));
  return r;
}

std::string shape_str(const G& d) {
  return Shape{d.B, d.T, d.H, d.Dk}.str() + " Dv" + std::to_string(d.Dv) + " C" + std::to_string(d.C);
}

void gdn_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const G& d : {G{2, 37, 3, 16, 16, 16, false}, G{2, 9, 2, 8, 12, 4, false}, G{1, 70, 2, 64, 64, 64, false},
                     G{8, 2048, 8, 64, 64, 64, true}}) {
    const Shape sv{d.B, d.T, d.H, d.Dv}, sq{d.B, d.T, d.H, d.Dk}, sg{d.B, d.T, d.H}, ss{d.B, d.H, d.Dk, d.Dv},
        sst{d.B, d.H, gdn_num_chunks(d.T, d.C), d.Dk, d.Dv};
    for (DType dt : {kF, kB}) {
      const double to = dt == kF ? kTolGdnF32 : kTolBF16;
      out.push_back({"gdn_chunk_fwd", d.big, [=] {
                       Builder b("gdn_chunk_fwd", dtype_label({dt, kF}), sq, seed);
                       b.set_shape(shape_str(d));
                       const GdnIn in = add_inputs(b, d, dt);
                       const int init = b.add("init", b.in.normal(ss, kF, 0.3f)),
                                 o = b.add("o", Inputs::poison(sv, dt)), st = b.add("states", Inputs::poison(sst, kF)),
                                 fin = b.add("final_state", Inputs::poison(ss, kF));
                       b.check(o, to);
                       b.check(st, kTolGdnF32);
                       b.check(fin, kTolGdnF32);
                       const int C = d.C;
                       b.run([=](const T& t) {
                         gdn_chunk_forward(t[in.q], t[in.k], t[in.v], t[in.g], t[in.beta], t[init], t[o], t[st], t[fin],
                                           C);
                       });
                       return b.done();
                     }});
      out.push_back({"gdn_chunk_bwd", d.big, [=] {
                       Builder b("gdn_chunk_bwd", dtype_label({dt, kF}), sq, seed);
                       b.set_shape(shape_str(d));
                       const GdnIn in = add_inputs(b, d, dt);
                       // The saved chunk states come from the CPU forward of the same inputs.
                       Tensor states = Tensor::empty(sst, kF);
                       const int st = b.add("states", states), go = b.add("dout", b.in.normal(sv, dt)),
                                 dfin = b.add("dfinal", b.in.normal(ss, kF)), dq = b.add("dq", Inputs::poison(sq, dt)),
                                 dk = b.add("dk", Inputs::poison(sq, dt)), dv = b.add("dv", Inputs::poison(sv, dt)),
                                 dg = b.add("dg", Inputs::poison(sg, kF)), dbe = b.add("dbeta", Inputs::poison(sg, kF)),
                                 dinit = b.add("dinit", Inputs::poison(ss, kF));
                       Case c = b.done();
                       gdn_chunk_forward(c.init[static_cast<size_t>(in.q)], c.init[static_cast<size_t>(in.k)],
                                         c.init[static_cast<size_t>(in.v)], c.init[static_cast<size_t>(in.g)],
                                         c.init[static_cast<size_t>(in.beta)], Tensor(), Tensor::empty(sv, dt), states,
                                         Tensor(), d.C);
                       const double tg = dt == kF ? kTolGdnF32 : kTolBF16;
                       for (int i : {dq, dk, dv}) c.checks.emplace_back(i, tg);
                       // f32 outputs: both sides compute in fp32 from the same (possibly bf16) inputs.
                       for (int i : {dg, dbe, dinit}) c.checks.emplace_back(i, kTolGdnF32);
                       const int C = d.C;
                       c.run = [=](const T& t) {
                         gdn_chunk_backward(t[in.q], t[in.k], t[in.v], t[in.g], t[in.beta], t[st], t[go], t[dfin],
                                            t[dq], t[dk], t[dv], t[dg], t[dbe], t[dinit], C);
                       };
                       return c;
                     }});
      out.push_back({"gdn_recurrent", d.big, [=] {
                       Builder b("gdn_recurrent", dtype_label({dt, kF}), sq, seed);
                       b.set_shape(shape_str(d));
                       const GdnIn in = add_inputs(b, d, dt);
                       const int s = b.add("state", b.in.normal(ss, kF, 0.3f)), o = b.add("o", Inputs::poison(sv, dt));
                       b.check(o, to);
                       b.check(s, kTolGdnF32);
                       b.run([=](const T& t) {
                         gdn_recurrent_forward(t[in.q], t[in.k], t[in.v], t[in.g], t[in.beta], t[s], t[o]);
                       });
                       return b.done();
                     }});
    }
  }
}

void gate_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [s, big] : {std::pair{Shape{2, 37, 3}, false}, std::pair{Shape{48, 2048, 8}, true}}) {
    const Shape sx = s, sh{s[2]};
    for (DType dt : {kF, kB}) {
      out.push_back({"gdn_gates_fwd", big, [=] {
                       Builder b("gdn_gates_fwd", dtype_label({dt, kF}), sx, seed);
                       const int a = b.add("a", b.in.normal(sx, dt, 3.f)), bb = b.add("bb", b.in.normal(sx, dt, 2.f)),
                                 al = b.add("A_log", b.in.uniform(sh, kF, 0.f, 2.7f)),
                                 dtb = b.add("dt_bias", b.in.uniform(sh, kF, -6.9f, -2.3f)),
                                 g = b.add("g", Inputs::poison(sx, kF)), be = b.add("beta", Inputs::poison(sx, kF));
                       b.check(g, kTolF32Reduce);
                       b.check(be, kTolF32Reduce);
                       b.run([=](const T& t) { gdn_gates_forward(t[a], t[bb], t[al], t[dtb], t[g], t[be], 2.f); });
                       return b.done();
                     }});
      out.push_back(
          {"gdn_gates_bwd", big, [=] {
             Builder b("gdn_gates_bwd", dtype_label({dt, kF}), sx, seed);
             const int a = b.add("a", b.in.normal(sx, dt, 3.f)), bb = b.add("bb", b.in.normal(sx, dt, 2.f)),
                       al = b.add("A_log", b.in.uniform(sh, kF, 0.f, 2.7f)),
                       dtb = b.add("dt_bias", b.in.uniform(sh, kF, -6.9f, -2.3f)),
                       dg = b.add("dg", b.in.normal(sx, kF)), dbe = b.add("dbeta", b.in.normal(sx, kF)),
                       da = b.add("da", Inputs::poison(sx, dt)), dbb = b.add("dbb", Inputs::poison(sx, dt)),
                       dal = b.add("dA_log", b.in.normal(sh, kF)), ddt = b.add("ddt_bias", b.in.normal(sh, kF));
             b.check(da, tol(dt, true));
             b.check(dbb, tol(dt, true));
             b.check(dal, 1e-4);
             b.check(ddt, 1e-4);
             b.run([=](const T& t) {
               gdn_gates_backward(t[a], t[bb], t[al], t[dtb], t[dg], t[dbe], t[da], t[dbb], t[dal], t[ddt], 2.f);
             });
             return b.done();
           }});
    }
  }
}

void short_conv_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [s, big] :
       {std::pair{Shape{2, 33, 40}, false}, std::pair{Shape{1, 5, 7}, false}, std::pair{Shape{48, 2048, 512}, true}}) {
    const Shape sx = s, sw{s[2], 4};
    for (DType dt : {kF, kB})
      for (bool silu : {true, false}) {
        const std::string name = silu ? "short_conv_silu" : "short_conv";
        out.push_back({name + "_fwd", big, [=] {
                         Builder b(name + "_fwd", dtype_label({dt}), sx, seed);
                         const int x = b.add("x", b.in.normal(sx, dt)), w = b.add("w", b.in.normal(sw, kF, 0.5f)),
                                   y = b.add("y", Inputs::poison(sx, dt));
                         b.check(y, tol(dt, true));
                         b.run([=](const T& t) { short_conv_forward(t[x], t[w], t[y], silu); });
                         return b.done();
                       }});
        out.push_back({name + "_bwd", big, [=] {
                         Builder b(name + "_bwd", dtype_label({dt}), sx, seed);
                         const int x = b.add("x", b.in.normal(sx, dt)), w = b.add("w", b.in.normal(sw, kF, 0.5f)),
                                   dy = b.add("dy", b.in.normal(sx, dt)), dx = b.add("dx", Inputs::poison(sx, dt)),
                                   dw = b.add("dw", b.in.normal(sw, kF));
                         b.check(dx, tol(dt, true));
                         b.check(dw, kTolF32Reduce);
                         b.run([=](const T& t) { short_conv_backward(t[x], t[w], t[dy], t[dx], t[dw], silu); });
                         return b.done();
                       }});
      }
  }
}

}  // namespace

void add_gdn_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  gdn_cases(out, seed);
  gate_cases(out, seed);
  short_conv_cases(out, seed);
}

}  // namespace pgolf::ops::selftest
