// Parity cases of the fused ops: q/k preparation (RMSNorm + RoPE + gain), RMSNorm backward from its
// output, and the one-pass per-channel scale backward.
#include <cmath>

#include "ops/channel_grad.h"
#include "ops/qk_prep.h"
#include "ops/rmsnorm.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;

// 1/sqrt(mean_D(x^2)+eps) per head vector of x (B, T, H, D), from the stored values.
Tensor head_rstd(const Tensor& x, float eps) {
  const int64_t D = x.dim(3), rows = x.numel() / D;
  const std::vector<float> v = x.to_float_vector();
  std::vector<float> r(static_cast<size_t>(rows));
  for (int64_t n = 0; n < rows; ++n) {
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(v[n * D + d]) * v[n * D + d];
    r[static_cast<size_t>(n)] = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
  }
  return Tensor::from_vector(r, Shape{rows});
}

void qk_prep_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct R {
    Shape s;
    int rot;
    bool big;
  };
  constexpr float kEps = 1e-6f;
  constexpr double kTolAngle = 5e-4;  // fp32 angles, as the rope cases
  for (const R& r : {R{Shape{1, 5, 3, 16}, 8, false}, R{Shape{2, 9, 4, 64}, 16, false},
                     R{Shape{2, 7, 2, 48}, 48, false}, R{Shape{1, 3, 8, 128}, 64, false},
                     R{Shape{64, 1024, 8, 64}, 64, true}, R{Shape{48, 2048, 4, 64}, 16, true}}) {
    const Shape sh{r.s[2]}, sn{r.s[0] * r.s[1] * r.s[2]};
    for (DType dt : {kF, kB}) {
      const double tl = dt == kF ? kTolAngle : kTolBF16;
      for (bool with_gain : {true, false}) {
        const std::string op = with_gain ? "qk_prep_fwd" : "qk_prep_fwd(no gain)";
        out.push_back({op, r.big, [=] {
                         Builder b(op, dtype_label({dt}), r.s, seed);
                         int x = b.add("x", b.in.normal(r.s, dt, 3.f)), g = b.add("gain", b.in.normal(sh, kF, 0.5f, 1.5f)),
                             y = b.add("y", Inputs::poison(r.s, dt)), rs = b.add("rstd", Inputs::poison(sn, kF));
                         b.check(y, tl);
                         b.check(rs, kTolF32Reduce);
                         b.run([=](const T& t) {
                           qk_prep_forward(t[x], with_gain ? t[g] : Tensor(), t[y], t[rs], r.rot, 10000.f, kEps);
                         });
                         return b.done();
                       }});
        const std::string bop = with_gain ? "qk_prep_bwd" : "qk_prep_bwd(no gain)";
        out.push_back({bop, r.big, [=] {
                         Builder b(bop, dtype_label({dt}), r.s, seed);
                         Tensor xh = b.in.normal(r.s, dt, 3.f);
                         int x = b.add("x", xh), g = b.add("gain", b.in.normal(sh, kF, 0.5f, 1.5f)),
                             rs = b.add("rstd", head_rstd(xh, kEps)), dy = b.add("dy", b.in.normal(r.s, dt)),
                             dx = b.add("dx", Inputs::poison(r.s, dt)), dg = b.add("dgain", b.in.normal(sh, kF));
                         b.check(dx, tl);
                         if (with_gain) b.check(dg, kTolF32Reduce);
                         b.run([=](const T& t) {
                           qk_prep_backward(t[x], with_gain ? t[g] : Tensor(), t[rs], t[dy], t[dx],
                                            with_gain ? t[dg] : Tensor(), r.rot, 10000.f);
                         });
                         return b.done();
                       }});
      }
    }
  }
}

void rmsnorm_from_output_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : std::vector<std::pair<Shape, bool>>{
           {Shape{7, 13}, false}, {Shape{33, 64}, false}, {Shape{65536, 512}, true}}) {
    const Shape s = shape, sn{shape[0]};
    for (DType dt : {kF, kB}) {
      for (int mode : {0, 1, 2}) {  // 0: dx, 1: in place over dy, 2: accumulated into dx (f32, as the residual)
        const bool in_place = mode == 1, acc = mode == 2;
        const std::string op = in_place ? "rmsnorm_bwd_from_output(in-place)"
                               : acc    ? "rmsnorm_bwd_from_output(accumulate)"
                                        : "rmsnorm_bwd_from_output";
        const DType dxt = acc ? kF : dt;
        out.push_back({op, big, [=] {
                         Builder b(op, dtype_label({dt, dxt}), s, seed);
                         int y = b.add("y", b.in.normal(s, dt)), r = b.add("rstd", b.in.normal(sn, kF, 0.1f, 1.f)),
                             dy = b.add("dy", b.in.normal(s, dt)),
                             dx = b.add("dx", acc ? b.in.normal(s, dxt) : Inputs::poison(s, dxt));
                         b.check(in_place ? dy : dx, tol(dxt, true));
                         b.run([=](const T& t) {
                           rmsnorm_backward_from_output(t[y], t[r], t[dy], in_place ? t[dy] : t[dx], acc);
                         });
                         return b.done();
                       }});
      }
    }
  }
}

// dy f32 (the residual gradient) with f and df in either dtype; C = 512 takes the vector kernel,
// C = 13 and the odd row count the general one.
void channel_scale_backward_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : std::vector<std::pair<Shape, bool>>{
           {Shape{7, 13}, false}, {Shape{37, 64}, false}, {Shape{65536, 512}, true}}) {
    const Shape s = shape, sc{shape[1]};
    for (DType dt : {kF, kB}) {
      for (bool acc : {false, true}) {
        const std::string op = acc ? "channel_scale_bwd(accumulate)" : "channel_scale_bwd";
        out.push_back({op, big, [=] {
                         Builder b(op, dtype_label({kF, dt}), s, seed);
                         int dy = b.add("dy", b.in.normal(s, kF)), sv = b.add("s", b.in.normal(sc, kF, 0.5f, 1.5f)),
                             f = b.add("f", b.in.normal(s, dt)), ds = b.add("ds", b.in.normal(sc, kF)),
                             df = b.add("df", acc ? b.in.normal(s, dt) : Inputs::poison(s, dt));
                         b.check(ds, kTolF32Reduce);
                         b.check(df, tol(dt, false));
                         b.run([=](const T& t) { channel_scale_backward(t[dy], t[sv], t[f], t[ds], t[df], acc); });
                         return b.done();
                       }});
      }
    }
  }
}

}  // namespace

void add_fused_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  qk_prep_cases(out, seed);
  rmsnorm_from_output_cases(out, seed + 1);
  channel_scale_backward_cases(out, seed + 2);
}

}  // namespace pgolf::ops::selftest
