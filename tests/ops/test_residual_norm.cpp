// The fused residual update + RMSNorm (ops/residual_norm.h): double-precision finite differences of
// its reference kernels, and the float op against the unfused ops it replaces (add_mul_channel |
// mix_channel, rmsnorm_forward, mul_channel by g; rmsnorm_backward_from_output + channel_scale_backward).
#include <gtest/gtest.h>

#include <cmath>

#include "ops/channel_grad.h"
#include "ops/elementwise.h"
#include "ops/residual_norm.h"
#include "ops/rmsnorm.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {

constexpr int64_t kN = 5, kC = 11;
constexpr double kEps = 1e-5;

// loss = <y, py> + <n, pn>: the residual and the norm output both reach the loss, as in a block.
TEST(OpsResidualNorm, AddFormFiniteDifferences) {
  for (double g : {1.0, 0.7}) {
    const auto x = randn(kN * kC, 1), s = randn(kC, 2), f = randn(kN * kC, 3), py = randn(kN * kC, 4),
               pn = randn(kN * kC, 5);
    auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ss, const std::vector<double>& ff) {
      std::vector<double> y(kN * kC), n(kN * kC), r(kN);
      ops::ref::add_rmsnorm_forward(xx.data(), ss.data(), ff.data(), y.data(), n.data(), r.data(), kN, kC, g, kEps);
      return dot(y, py) + dot(n, pn);
    };
    std::vector<double> y(kN * kC), n(kN * kC), r(kN), dy = py, ds(kC, 0.0), df(kN * kC);
    ops::ref::add_rmsnorm_forward(x.data(), s.data(), f.data(), y.data(), n.data(), r.data(), kN, kC, g, kEps);
    ops::ref::add_rmsnorm_backward(n.data(), r.data(), pn.data(), g, s.data(), f.data(), dy.data(), ds.data(),
                                   df.data(), kN, kC);
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(v, s, f); }, x, dy, "add dx");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(x, v, f); }, s, ds, "add ds");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(x, s, v); }, f, df, "add df");
  }
}

TEST(OpsResidualNorm, MixFormFiniteDifferences) {
  for (double g : {1.0, 0.7}) {
    const auto a = randn(kC, 11), x = randn(kN * kC, 12), b = randn(kC, 13), x0 = randn(kN * kC, 14),
               py = randn(kN * kC, 15), pn = randn(kN * kC, 16);
    auto loss = [&](const std::vector<double>& aa, const std::vector<double>& xx, const std::vector<double>& bb,
                    const std::vector<double>& xx0) {
      std::vector<double> y(kN * kC), n(kN * kC), r(kN);
      ops::ref::mix_rmsnorm_forward(aa.data(), xx.data(), bb.data(), xx0.data(), y.data(), n.data(), r.data(), kN, kC,
                                    g, kEps);
      return dot(y, py) + dot(n, pn);
    };
    std::vector<double> y(kN * kC), n(kN * kC), r(kN), dy = py, da(kC, 0.0), db(kC, 0.0), dx(kN * kC), dx0(kN * kC);
    ops::ref::mix_rmsnorm_forward(a.data(), x.data(), b.data(), x0.data(), y.data(), n.data(), r.data(), kN, kC, g,
                                  kEps);
    ops::ref::mix_rmsnorm_backward(n.data(), r.data(), pn.data(), g, a.data(), x.data(), b.data(), x0.data(),
                                   dy.data(), da.data(), db.data(), dx.data(), dx0.data(), kN, kC);
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(v, x, b, x0); }, a, da, "mix da");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(a, v, b, x0); }, x, dx, "mix dx");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(a, x, v, x0); }, b, db, "mix db");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(a, x, b, v); }, x0, dx0, "mix dx0");
  }
}

Tensor copy_of(const Tensor& t) { return make_tensor(to_d(t), t.shape(), t.dtype()); }

// The unfused forward: y from the update op, n = rmsnorm(y), then times g (mul_head's broadcast gain).
void unfused_norm(const Tensor& y, const Tensor& n, const Tensor& rstd, float g, float eps) {
  ops::rmsnorm_forward(y, Tensor(), n, rstd, eps);
  if (g != 1.f) {
    Tensor gv = make_tensor(std::vector<double>(static_cast<size_t>(n.dim(1)), g), Shape{n.dim(1)}, DType::F32);
    ops::mul_channel(n, gv, n);
  }
}

// The unfused backward of the norm: mul_head's dn g, then the from-output backward added into dy; it reads
// the unit-gain output m = n / g (what the unfused path keeps).
void unfused_norm_backward(const Tensor& m, const Tensor& rstd, const Tensor& dn, float g, const Tensor& dy) {
  Tensor dm = copy_of(dn);
  if (g != 1.f) {
    Tensor gv = make_tensor(std::vector<double>(static_cast<size_t>(dn.dim(1)), g), Shape{dn.dim(1)}, DType::F32);
    ops::mul_channel(dn, gv, dm);
  }
  ops::rmsnorm_backward_from_output(m, rstd, dm, dy, /*accumulate=*/true);
}

// f32 with g = 1 must be bit-identical (same float operations in the same order); g != 1 and bf16 only close.
double tol_of(DType act, float g) { return act == DType::BF16 ? 2e-2 : (g == 1.f ? 0.0 : 1e-5); }

TEST(OpsResidualNorm, AddFormEqualsTheUnfusedOps) {
  const Shape sh{9, 24}, sc{24};
  const float eps = 1e-6f;
  for (DType act : {DType::F32, DType::BF16})
    for (float g : {1.f, 0.57735026f})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(act)) + " g=" + std::to_string(g) + (acc ? " acc" : ""));
        const double tol = tol_of(act, g);
        const Tensor x = rand_tensor(sh, DType::F32, 1), s = rand_tensor(sc, DType::F32, 2, 0.5),
                     f = rand_tensor(sh, act, 3), dres = rand_tensor(sh, DType::F32, 4), dn = rand_tensor(sh, act, 5),
                     ds0 = rand_tensor(sc, DType::F32, 6), df0 = rand_tensor(sh, act, 7);
        // Fused.
        Tensor y = Tensor::empty(sh, DType::F32), n = Tensor::empty(sh, act), r = Tensor::empty(Shape{9}, DType::F32);
        ops::add_rmsnorm_forward(x, s, f, y, n, r, g, eps);
        Tensor dy = copy_of(dres), ds = copy_of(ds0), df = acc ? copy_of(df0) : Tensor::empty(sh, act);
        ops::add_rmsnorm_backward(n, r, dn, g, s, f, dy, ds, df, acc);
        // Unfused.
        Tensor yu = Tensor::empty(sh, DType::F32), nu = Tensor::empty(sh, act), ru = Tensor::empty(Shape{9}, DType::F32);
        ops::add_mul_channel(x, s, f, yu);
        Tensor m = Tensor::empty(sh, act);
        ops::rmsnorm_forward(yu, Tensor(), m, ru, eps);
        unfused_norm(yu, nu, ru, g, eps);
        Tensor dyu = copy_of(dres), dsu = copy_of(ds0), dfu = acc ? copy_of(df0) : Tensor::empty(sh, act);
        unfused_norm_backward(m, ru, dn, g, dyu);
        ops::channel_scale_backward(dyu, s, f, dsu, dfu, acc);
        expect_close(to_d(y), to_d(yu), 0.0, "y");
        expect_close(to_d(r), to_d(ru), 0.0, "rstd");
        expect_close(to_d(n), to_d(nu), tol, "n");
        expect_close(to_d(dy), to_d(dyu), tol, "dx");
        expect_close(to_d(ds), to_d(dsu), act == DType::BF16 ? tol : 1e-5, "ds");
        expect_close(to_d(df), to_d(dfu), tol, "df");
      }
}

TEST(OpsResidualNorm, MixFormEqualsTheUnfusedOps) {
  const Shape sh{9, 24}, sc{24};
  const float eps = 1e-6f;
  for (DType act : {DType::F32, DType::BF16})
    for (float g : {1.f, 0.5f})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(act)) + " g=" + std::to_string(g) + (acc ? " acc" : ""));
        const double tol = tol_of(act, g);
        // x f32 (a block's output), x0 in the activation dtype (the normed embedding), as in the model.
        const Tensor a = rand_tensor(sc, DType::F32, 21, 0.5), x = rand_tensor(sh, DType::F32, 22),
                     b = rand_tensor(sc, DType::F32, 23, 0.5), x0 = rand_tensor(sh, act, 24),
                     dres = rand_tensor(sh, DType::F32, 25), dn = rand_tensor(sh, act, 26),
                     d0 = rand_tensor(sc, DType::F32, 27), dx_0 = rand_tensor(sh, DType::F32, 28),
                     dx0_0 = rand_tensor(sh, act, 29);
        Tensor y = Tensor::empty(sh, DType::F32), n = Tensor::empty(sh, act), r = Tensor::empty(Shape{9}, DType::F32);
        ops::mix_rmsnorm_forward(a, x, b, x0, y, n, r, g, eps);
        Tensor dy = copy_of(dres), da = copy_of(d0), db = copy_of(d0);
        Tensor dx = acc ? copy_of(dx_0) : Tensor::empty(sh, DType::F32), dx0 = acc ? copy_of(dx0_0) : Tensor::empty(sh, act);
        ops::mix_rmsnorm_backward(n, r, dn, g, a, x, b, x0, dy, da, db, dx, acc, dx0, acc);

        Tensor yu = Tensor::empty(sh, DType::F32), nu = Tensor::empty(sh, act), ru = Tensor::empty(Shape{9}, DType::F32);
        ops::mix_channel(a, x, b, x0, yu);
        Tensor m = Tensor::empty(sh, act);
        ops::rmsnorm_forward(yu, Tensor(), m, ru, eps);
        unfused_norm(yu, nu, ru, g, eps);
        Tensor dyu = copy_of(dres), dau = copy_of(d0), dbu = copy_of(d0);
        Tensor dxu = acc ? copy_of(dx_0) : Tensor::empty(sh, DType::F32), dx0u = acc ? copy_of(dx0_0) : Tensor::empty(sh, act);
        unfused_norm_backward(m, ru, dn, g, dyu);
        ops::channel_scale_backward(dyu, a, x, dau, dxu, acc);
        ops::channel_scale_backward(dyu, b, x0, dbu, dx0u, acc);
        expect_close(to_d(y), to_d(yu), 0.0, "y");
        expect_close(to_d(n), to_d(nu), tol, "n");
        expect_close(to_d(da), to_d(dau), act == DType::BF16 ? tol : 1e-5, "da");
        expect_close(to_d(db), to_d(dbu), act == DType::BF16 ? tol : 1e-5, "db");
        expect_close(to_d(dx), to_d(dxu), tol, "dx");
        expect_close(to_d(dx0), to_d(dx0u), tol, "dx0");
      }
}

// Block 0 mixes x0 with itself: one value, one gradient tensor receiving both contributions.
TEST(OpsResidualNorm, MixFormWithXAndX0OneTensor) {
  const Shape sh{6, 16}, sc{16};
  const Tensor a = rand_tensor(sc, DType::F32, 31), b = rand_tensor(sc, DType::F32, 32),
               x = rand_tensor(sh, DType::F32, 33), dres = rand_tensor(sh, DType::F32, 34),
               dn = rand_tensor(sh, DType::F32, 35);
  Tensor y = Tensor::empty(sh, DType::F32), n = Tensor::empty(sh, DType::F32), r = Tensor::empty(Shape{6}, DType::F32);
  ops::mix_rmsnorm_forward(a, x, b, x, y, n, r, 1.f, 1e-6f);
  Tensor dy = copy_of(dres), da = Tensor::zeros(sc, DType::F32), db = Tensor::zeros(sc, DType::F32);
  Tensor dx = Tensor::empty(sh, DType::F32);
  ops::mix_rmsnorm_backward(n, r, dn, 1.f, a, x, b, x, dy, da, db, dx, false, dx, true);
  // Separately: dx = a d and dx0 = b d, summed.
  Tensor dy2 = copy_of(dres), da2 = Tensor::zeros(sc, DType::F32), db2 = Tensor::zeros(sc, DType::F32);
  Tensor p = Tensor::empty(sh, DType::F32), q = Tensor::empty(sh, DType::F32);
  ops::mix_rmsnorm_backward(n, r, dn, 1.f, a, x, b, x, dy2, da2, db2, p, false, q, false);
  const auto pv = to_d(p), qv = to_d(q);
  std::vector<double> want(pv.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = pv[i] + qv[i];
  expect_close(to_d(dx), want, 1e-6, "dx + dx0");
  expect_close(to_d(da), to_d(da2), 0.0, "da");
}

// No norm gradient (dn undefined): exactly the update's channel backward.
TEST(OpsResidualNorm, WithoutNormGradientIsTheChannelBackward) {
  const Shape sh{7, 16}, sc{16};
  const Tensor x = rand_tensor(sh, DType::F32, 41), s = rand_tensor(sc, DType::F32, 42), f = rand_tensor(sh, DType::F32, 43),
               dres = rand_tensor(sh, DType::F32, 44);
  Tensor y = Tensor::empty(sh, DType::F32), n = Tensor::empty(sh, DType::F32), r = Tensor::empty(Shape{7}, DType::F32);
  ops::add_rmsnorm_forward(x, s, f, y, n, r, 1.f, 1e-6f);
  Tensor dy = copy_of(dres), ds = Tensor::zeros(sc, DType::F32), df = Tensor::empty(sh, DType::F32);
  ops::add_rmsnorm_backward(n, r, Tensor(), 1.f, s, f, dy, ds, df, false);
  Tensor dsu = Tensor::zeros(sc, DType::F32), dfu = Tensor::empty(sh, DType::F32);
  ops::channel_scale_backward(dres, s, f, dsu, dfu, false);
  expect_close(to_d(dy), to_d(dres), 0.0, "dy unchanged");
  expect_close(to_d(ds), to_d(dsu), 0.0, "ds");
  expect_close(to_d(df), to_d(dfu), 0.0, "df");
}

TEST(OpsResidualNorm, BadInputsNameTheOp) {
  const Shape sh{4, 8}, sc{8};
  const Tensor x = rand_tensor(sh, DType::F32, 51), s = rand_tensor(sc, DType::F32, 52), f = rand_tensor(sh, DType::F32, 53);
  Tensor y = Tensor::empty(sh, DType::F32), n = Tensor::empty(sh, DType::F32), r = Tensor::empty(Shape{4}, DType::F32);
  expect_error_naming([&] { ops::add_rmsnorm_forward(x, s, f, Tensor::empty(sh, DType::BF16), n, r, 1.f, 1e-6f); },
                      "add_rmsnorm_forward");  // y must be the f32 stream
  expect_error_naming([&] { ops::add_rmsnorm_forward(x, Tensor::empty(Shape{7}, DType::F32), f, y, n, r, 1.f, 1e-6f); },
                      "add_rmsnorm_forward");
  expect_error_naming([&] { ops::mix_rmsnorm_forward(s, x, s, f, y, y, r, 1.f, 1e-6f); }, "mix_rmsnorm_forward");
  ops::add_rmsnorm_forward(x, s, f, y, n, r, 1.f, 1e-6f);
  Tensor ds = Tensor::zeros(sc, DType::F32);
  expect_error_naming([&] { ops::add_rmsnorm_backward(n, r, n, 0.f, s, f, y, ds, Tensor(), false); },
                      "add_rmsnorm_backward");  // g = 0
  expect_error_naming([&] { ops::add_rmsnorm_backward(n, r, n, 1.f, s, f, y, ds, y, false); }, "add_rmsnorm_backward");
  expect_error_naming(
      [&] { ops::mix_rmsnorm_backward(n, r, n, 1.f, s, x, s, f, y, ds, ds, y, false, Tensor(), false); },
      "mix_rmsnorm_backward");  // dx aliases dy
}

}  // namespace
