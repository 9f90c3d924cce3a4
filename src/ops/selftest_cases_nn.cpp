// Parity cases: RMSNorm, RoPE, squared activations, soft-capped cross-entropy.
#include <cmath>

#include "ops/activation.h"
#include "ops/cross_entropy.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;
const std::vector<std::pair<Shape, bool>> kRowShapes = {
    {Shape{7, 13}, false}, {Shape{33, 64}, false}, {Shape{65536, 512}, true}};

// 1/sqrt(mean(x^2)+eps) per row, from the (possibly bf16-rounded) stored values.
Tensor host_rstd(const Tensor& x, float eps) {
  const int64_t N = x.dim(0), C = x.dim(1);
  const std::vector<float> v = x.to_float_vector();
  std::vector<float> r(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(v[n * C + c]) * v[n * C + c];
    r[n] = static_cast<float>(1.0 / std::sqrt(ss / C + eps));
  }
  return Tensor::from_vector(r, Shape{N});
}

void rmsnorm_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  constexpr float kEps = 1e-6f;
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = shape, sc{shape[1]}, sn{shape[0]};
    for (DType dt : {kF, kB}) {
      for (bool with_gain : {true, false}) {
        const std::string op = with_gain ? "rmsnorm_fwd" : "rmsnorm_fwd(no gain)";
        out.push_back({op, big, [=] {
                         Builder b(op, dtype_label({dt}), s, seed);
                         int x = b.add("x", b.in.normal(s, dt, 3.f)), g = b.add("gain", b.in.normal(sc, kF, 0.2f, 1.f)),
                             y = b.add("y", Inputs::poison(s, dt)), r = b.add("rstd", Inputs::poison(sn, kF));
                         b.check(y, tol(dt, true));
                         b.check(r, kTolF32Reduce);
                         b.run([=](const T& t) { rmsnorm_forward(t[x], with_gain ? t[g] : Tensor(), t[y], t[r], kEps); });
                         return b.done();
                       }});
        const std::string bop = with_gain ? "rmsnorm_bwd" : "rmsnorm_bwd(no gain)";
        out.push_back({bop, big, [=] {
                         Builder b(bop, dtype_label({dt}), s, seed);
                         Tensor xh = b.in.normal(s, dt, 3.f);
                         Tensor rh = host_rstd(xh, kEps);
                         int x = b.add("x", xh), g = b.add("gain", b.in.normal(sc, kF, 0.2f, 1.f)),
                             r = b.add("rstd", rh), dy = b.add("dy", b.in.normal(s, dt)),
                             dx = b.add("dx", Inputs::poison(s, dt)), dg = b.add("dgain", b.in.normal(sc, kF));
                         b.check(dx, tol(dt, true));
                         if (with_gain) b.check(dg, kTolF32Reduce);
                         b.run([=](const T& t) {
                           rmsnorm_backward(t[x], with_gain ? t[g] : Tensor(), t[r], t[dy], t[dx],
                                            with_gain ? t[dg] : Tensor());
                         });
                         return b.done();
                       }});
      }
      out.push_back({"rmsnorm(in-place)", big, [=] {
                       Builder b("rmsnorm(in-place)", dtype_label({dt}), s, seed);
                       Tensor xh = b.in.normal(s, dt, 3.f);
                       int x = b.add("x=y", xh), g = b.add("gain", b.in.normal(sc, kF, 0.2f, 1.f)),
                           r = b.add("rstd", Inputs::poison(sn, kF)), x2 = b.add("x2", xh.to(Device::CPU)),
                           d = b.add("dy=dx", b.in.normal(s, dt)), dg = b.add("dgain", b.in.normal(sc, kF));
                       b.check(x, tol(dt, true));
                       b.check(d, tol(dt, true));
                       b.check(dg, kTolF32Reduce);
                       b.run([=](const T& t) {
                         rmsnorm_forward(t[x], t[g], t[x], t[r], kEps);
                         rmsnorm_backward(t[x2], t[g], t[r], t[d], t[d], t[dg]);
                       });
                       return b.done();
                     }});
    }
  }
}

void rope_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct R {
    Shape s;
    int rot;
    int64_t pos;
    bool big;
  };
  // fp32 angles up to T rad: an ulp of difference in base^(-2i/r) between CPU and GPU moves the angle
  // by ~T * 6e-8, hence the looser f32 tolerance.
  constexpr double kTolRope = 5e-4;
  for (const R& r : {R{Shape{1, 5, 3, 16}, 8, 3, false}, R{Shape{2, 9, 2, 64}, 16, 0, false},
                     R{Shape{2, 4, 1, 10}, 10, 7, false}, R{Shape{32, 2048, 8, 64}, 16, 0, true}}) {
    for (DType dt : {kF, kB}) {
      const double tl = dt == kF ? kTolRope : kTolBF16;
      for (bool fwd : {true, false}) {
        for (bool in_place : {false, true}) {
          const std::string op = std::string(fwd ? "rope_fwd" : "rope_bwd") + (in_place ? "(in-place)" : "");
          out.push_back({op, r.big, [=] {
                           Builder b(op, dtype_label({dt}), r.s, seed);
                           int x = b.add("x", b.in.normal(r.s, dt)), y = b.add("y", Inputs::poison(r.s, dt));
                           b.check(in_place ? x : y, tl);
                           b.run([=](const T& t) {
                             const Tensor& o = in_place ? t[x] : t[y];
                             if (fwd) rope_forward(t[x], o, r.rot, 10000.f, r.pos);
                             else rope_backward(t[x], o, r.rot, 10000.f, r.pos);
                           });
                           return b.done();
                         }});
        }
      }
    }
  }
}

void activation_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = big ? Shape{65536, 2048} : shape;  // the MLP hidden width
    for (DType dt : {kF, kB}) {
      for (Act a : {Act::Relu2, Act::LeakyRelu2}) {
        const std::string name = a == Act::Relu2 ? "relu2" : "leaky_relu2";
        out.push_back({name + "_fwd", big, [=] {
                         Builder b(name + "_fwd", dtype_label({dt}), s, seed);
                         int x = b.add("x", b.in.normal(s, dt)), y = b.add("y", Inputs::poison(s, dt));
                         b.check(y, tol(dt));
                         b.run([=](const T& t) { activation_forward(a, t[x], t[y], 0.5f); });
                         return b.done();
                       }});
        out.push_back({name + "_bwd(in-place)", big, [=] {
                         Builder b(name + "_bwd(in-place)", dtype_label({dt}), s, seed);
                         int x = b.add("x", b.in.normal(s, dt)), d = b.add("dy=dx", b.in.normal(s, dt));
                         b.check(d, tol(dt));
                         b.run([=](const T& t) { activation_backward(a, t[x], t[d], t[d], 0.5f); });
                         return b.done();
                       }});
      }
    }
  }
}

void cross_entropy_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct S {
    int64_t N, V;
    bool big;
  };
  // With cap 30 and V % 8 == 0, V <= 8192 the register kernel runs: V = 8 / 64 / 1024 one warp per row,
  // 2048 / 4096 / 8192 two to eight; 700 x 4096 has more row groups than the GPU holds blocks, so blocks
  // stride over rows (and prefetch). V = 13, V = 8200, no cap and cap 50 take the general kernel.
  for (const S sh : {S{7, 13, false}, S{5, 8, false}, S{33, 64, false}, S{9, 2048, false}, S{700, 4096, false},
                     S{16, 8192, false}, S{3, 8200, false}, S{65536, 1024, true}}) {
    const Shape sl{sh.N, sh.V}, sn{sh.N};
    for (DType dt : {kF, kB}) {
      for (float cap : {30.f, 0.f, 50.f}) {
        for (int mode = 0; mode < 3; ++mode) {  // 0: loss + dlogits, 1: loss only, 2: dlogits in place
          const std::string op = std::string("softcap_ce") + (cap == 0.f ? "(nocap)" : cap == 50.f ? "(cap 50)" : "") +
                                 (mode == 1 ? "(fwd only)" : mode == 2 ? "(in-place)" : "");
          if (sh.big && cap != 30.f) continue;
          out.push_back({op, sh.big, [=] {
                           Builder b(op, dtype_label({dt}), sl, seed);
                           int z = b.add("logits", b.in.normal(sl, dt, 8.f)),
                               tg = b.add("targets", b.in.ids(sn, sh.V, 0.1)),
                               l = b.add("losses", Inputs::poison(sn, kF)),
                               d = b.add("dlogits", Inputs::poison(sl, dt));
                           b.check(l, kTolF32Reduce);
                           if (mode == 0) b.check(d, tol(dt, true));
                           if (mode == 2) b.check(z, tol(dt, true));
                           const float gs = 1.f / static_cast<float>(sh.N);
                           b.run([=](const T& t) {
                             const Tensor dl = mode == 0 ? t[d] : mode == 2 ? t[z] : Tensor();
                             softcap_cross_entropy(t[z], t[tg], cap, t[l], dl, gs);
                           });
                           return b.done();
                         }});
        }
      }
      if (sh.big) continue;
      out.push_back({"softcap_log_softmax", false, [=] {
                       Builder b("softcap_log_softmax", dtype_label({dt, kF}), sl, seed);
                       int z = b.add("logits", b.in.normal(sl, dt, 8.f)), o = b.add("logprobs", Inputs::poison(sl, kF));
                       b.check(o, kTolF32Reduce);
                       b.run([=](const T& t) { softcap_log_softmax(t[z], 30.f, t[o]); });
                       return b.done();
                     }});
    }
  }
}

}  // namespace

void add_nn_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  rmsnorm_cases(out, seed);
  rope_cases(out, seed + 100);
  activation_cases(out, seed + 200);
  cross_entropy_cases(out, seed + 300);
}

}  // namespace pgolf::ops::selftest
