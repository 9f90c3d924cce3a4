// Parity cases of the GatedDeltaNet ops (TECHNIQUES.md §5.18, src/ops/gdn.h): the chunked forward and
// backward (each CUDA kernel forced), the recurrent form and the short convolution. Inputs look like the layer's:
// q, k of norm about 1 (q also / sqrt(Dk)), log decays g in [-1, -0.01], write strengths beta in (0, 2); the
// chunked cases add variants without init/dfinal, with negative beta, and with strong and weak decay.
#include <algorithm>
#include <cmath>
#include <string>

#include "ops/gdn.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;
// The chunked recurrence chains several fp32 reductions per chunk; CPU and GPU sum in different orders.
constexpr double kTolGdnF32 = 1e-4;
// The tensor-core kernels (GdnKernel::Tc) round every product's inputs to tf32 (2^-11 relative): their errors
// against the fp32 CPU op, measured on the CPU by running the kernels' source under emulation
// (tests/ops/test_gdn_tc.cpp, docs/GDN.md), are <= 1/2 of these. dg and dbeta are sums of many cancelling terms.
constexpr double kTolTc = 5e-3, kTolTcGates = 1e-2;

struct G {
  int64_t B, T, H, Dk, Dv;
  int C;
  bool big;
};

// Input ranges and which optional tensors are given.
struct Var {
  const char* tag;
  bool init, dfinal;
  float beta_lo, beta_hi, g_lo, g_hi;
};
constexpr Var kPlain{"", true, true, 0.05f, 1.95f, -1.f, -0.01f};
const Var kVariants[] = {kPlain,
                         {" no-init/dfinal", false, false, 0.05f, 1.95f, -1.f, -0.01f},
                         {" neg-beta", true, true, -1.f, 2.f, -1.f, -0.01f},
                         {" strong-decay", false, true, 0.05f, 1.95f, -8.f, -2.f},
                         {" weak-decay", true, false, 0.05f, 1.95f, -0.05f, -0.001f}};

struct GdnIn {
  int q, k, v, g, beta;
};

GdnIn add_inputs(Builder& b, const G& d, DType dt, const Var& var) {
  const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H};
  const float kstd = 1.f / std::sqrt(static_cast<float>(d.Dk));
  GdnIn r{};
  r.q = b.add("q", b.in.normal(sq, dt, kstd / std::sqrt(static_cast<float>(d.Dk))));
  r.k = b.add("k", b.in.normal(sq, dt, kstd));
  r.v = b.add("v", b.in.normal(sv, dt));
  r.g = b.add("g", b.in.uniform(sg, kF, var.g_lo, var.g_hi));
  r.beta = b.add("beta", b.in.uniform(sg, kF, var.beta_lo, var.beta_hi));
  return r;
}

std::string shape_str(const G& d, const Var& var) {
  return Shape{d.B, d.T, d.H, d.Dk}.str() + " Dv" + std::to_string(d.Dv) + " C" + std::to_string(d.C) + var.tag;
}

// The chunked forward and backward with one CUDA kernel forced (ops/gdn.h: GdnKernel), every output checked on
// its own: o, states, final_state; dq, dk, dv, dg, dbeta, dinit.
void chunk_cases(std::vector<CaseMaker>& out, uint64_t seed, GdnKernel kern, const G& d, const Var& var, DType dt) {
  const bool tc = kern == GdnKernel::Tc;
  const std::string sfx = std::string("[") + gdn_kernel_name(kern) + "]";
  const Shape sv{d.B, d.T, d.H, d.Dv}, sq{d.B, d.T, d.H, d.Dk}, sg{d.B, d.T, d.H}, ss{d.B, d.H, d.Dk, d.Dv},
      sst{d.B, d.H, gdn_num_chunks(d.T, d.C), d.Dk, d.Dv};
  // Outputs stored in bf16 carry its rounding; f32 outputs are held to the kernel's own accuracy.
  const double tf = tc ? kTolTc : kTolGdnF32, tgates = tc ? kTolTcGates : kTolGdnF32;
  const double ta = dt == kB ? std::max(kTolBF16, tf) : tf;
  out.push_back({"gdn_chunk_fwd" + sfx, d.big, [=] {
                   Builder b("gdn_chunk_fwd" + sfx, dtype_label({dt, kF}), sq, seed);
                   b.set_shape(shape_str(d, var));
                   const GdnIn in = add_inputs(b, d, dt, var);
                   const int init = b.add("init", b.in.normal(ss, kF, 0.3f)), o = b.add("o", Inputs::poison(sv, dt)),
                             st = b.add("states", Inputs::poison(sst, kF)),
                             fin = b.add("final_state", Inputs::poison(ss, kF));
                   b.check(o, ta);
                   b.check(st, tf);
                   b.check(fin, tf);
                   const int C = d.C;
                   const bool with_init = var.init;
                   b.run([=](const T& t) {
                     set_gdn_kernel(kern);
                     gdn_chunk_forward(t[in.q], t[in.k], t[in.v], t[in.g], t[in.beta], with_init ? t[init] : Tensor(),
                                       t[o], t[st], t[fin], C);
                     set_gdn_kernel(GdnKernel::Auto);
                   });
                   return b.done();
                 }});
  out.push_back({"gdn_chunk_bwd" + sfx, d.big, [=] {
                   Builder b("gdn_chunk_bwd" + sfx, dtype_label({dt, kF}), sq, seed);
                   b.set_shape(shape_str(d, var));
                   const GdnIn in = add_inputs(b, d, dt, var);
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
                   for (int i : {dq, dk, dv}) c.checks.emplace_back(i, ta);
                   // f32 outputs: both sides compute in fp32 (tf32 products on the tc kernels) from the same inputs.
                   c.checks.emplace_back(dg, tgates);
                   c.checks.emplace_back(dbe, tgates);
                   c.checks.emplace_back(dinit, tf);
                   const int C = d.C;
                   const bool with_dfinal = var.dfinal;
                   c.run = [=](const T& t) {
                     set_gdn_kernel(kern);
                     gdn_chunk_backward(t[in.q], t[in.k], t[in.v], t[in.g], t[in.beta], t[st], t[go],
                                        with_dfinal ? t[dfin] : Tensor(), t[dq], t[dk], t[dv], t[dg], t[dbe], t[dinit],
                                        C);
                     set_gdn_kernel(GdnKernel::Auto);
                   };
                   return c;
                 }});
}

void gdn_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  // The loop kernels: any shape (small heads, chunks that do not divide T), every variant at 64/64/64.
  for (const G& d : {G{2, 37, 3, 16, 16, 16, false}, G{2, 9, 2, 8, 12, 4, false}})
    for (DType dt : {kF, kB}) chunk_cases(out, seed, GdnKernel::Loop, d, kPlain, dt);
  // The tensor-core kernels take Dk = Dv = C = 64 only: one chunk, ragged ends (one partial chunk, several
  // chunks and a partial one), several heads and batch rows, the training shape; both kernels on each.
  for (const G& d : {G{1, 64, 2, 64, 64, 64, false}, G{1, 37, 2, 64, 64, 64, false}, G{1, 70, 2, 64, 64, 64, false},
                     G{2, 200, 3, 64, 64, 64, false}, G{8, 2048, 8, 64, 64, 64, true}})
    for (GdnKernel kern : {GdnKernel::Tc, GdnKernel::Loop})
      for (DType dt : {kF, kB})
        for (const Var& var : kVariants)
          if (!d.big || var.tag[0] == '\0') chunk_cases(out, seed, kern, d, var, dt);
  for (const G& d : {G{2, 37, 3, 16, 16, 16, false}, G{2, 9, 2, 8, 12, 4, false}, G{1, 70, 2, 64, 64, 64, false},
                     G{8, 2048, 8, 64, 64, 64, true}}) {
    const Shape sv{d.B, d.T, d.H, d.Dv}, sq{d.B, d.T, d.H, d.Dk}, ss{d.B, d.H, d.Dk, d.Dv};
    for (DType dt : {kF, kB}) {
      const double to = dt == kF ? kTolGdnF32 : kTolBF16;
      out.push_back({"gdn_recurrent", d.big, [=] {
                       Builder b("gdn_recurrent", dtype_label({dt, kF}), sq, seed);
                       b.set_shape(shape_str(d, kPlain));
                       const GdnIn in = add_inputs(b, d, dt, kPlain);
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

// Every shape runs the streaming kernels ([run]) and the per-element ones ([generic]); K = 10 has no streaming
// kernel (both names then run the generic one); T = 130 crosses two 64-position runs with a partial third.
void short_conv_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct ConvShape {
    Shape x;
    int64_t K;
    bool big;
  };
  for (const ConvShape& cs : {ConvShape{Shape{2, 33, 40}, 4, false}, ConvShape{Shape{1, 5, 7}, 4, false},
                              ConvShape{Shape{2, 130, 40}, 3, false}, ConvShape{Shape{1, 70, 9}, 10, false},
                              ConvShape{Shape{48, 2048, 512}, 4, true}}) {
    const Shape sx = cs.x, sw{cs.x[2], cs.K};
    for (DType dt : {kF, kB})
      for (bool silu : {true, false})
        for (bool generic : {false, true}) {
          const std::string name = std::string(silu ? "short_conv_silu" : "short_conv") + (generic ? "[generic]" : "[run]");
          out.push_back({name + "_fwd", cs.big, [=] {
                           Builder b(name + "_fwd", dtype_label({dt}), sx, seed);
                           const int x = b.add("x", b.in.normal(sx, dt)), w = b.add("w", b.in.normal(sw, kF, 0.5f)),
                                     y = b.add("y", Inputs::poison(sx, dt));
                           b.check(y, tol(dt, true));
                           b.run([=](const T& t) {
                             set_short_conv_generic(generic);
                             short_conv_forward(t[x], t[w], t[y], silu);
                             set_short_conv_generic(false);
                           });
                           return b.done();
                         }});
          out.push_back({name + "_bwd", cs.big, [=] {
                           Builder b(name + "_bwd", dtype_label({dt}), sx, seed);
                           const int x = b.add("x", b.in.normal(sx, dt)), w = b.add("w", b.in.normal(sw, kF, 0.5f)),
                                     dy = b.add("dy", b.in.normal(sx, dt)), dx = b.add("dx", Inputs::poison(sx, dt)),
                                     dw = b.add("dw", b.in.normal(sw, kF));
                           b.check(dx, tol(dt, true));
                           b.check(dw, kTolF32Reduce);
                           b.run([=](const T& t) {
                             set_short_conv_generic(generic);
                             short_conv_backward(t[x], t[w], t[dy], t[dx], t[dw], silu);
                             set_short_conv_generic(false);
                           });
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
