// The fused q/k preparation against the unfused reference ops it replaces (RMSNorm per head, RoPE,
// per-head gain), its backward against finite differences in double, and its argument checks.
#include <gtest/gtest.h>

#include "ops/qk_prep.h"
#include "ops/rmsnorm.h"
#include "ops/reference.h"
#include "ops_test_util.h"

namespace pgolf {
namespace {

using namespace testing;

struct Geo {
  int64_t B, T, H, D;
  int rot;
};

// rope(rmsnorm(x)) * gain[h] with the separate double-precision reference kernels.
std::vector<double> unfused(const std::vector<double>& x, const std::vector<double>& gain, const Geo& g, double eps,
                            int64_t off) {
  const int64_t rows = g.B * g.T * g.H;
  std::vector<double> n(x.size()), r(static_cast<size_t>(rows)), y(x.size());
  ops::ref::rmsnorm_forward(x.data(), nullptr, n.data(), r.data(), rows, g.D, eps);
  ops::ref::rope_forward(n.data(), y.data(), g.B, g.T, g.H, g.D, g.rot, 10000.0, off);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t d = 0; d < g.D; ++d) y[static_cast<size_t>(row * g.D + d)] *= gain[static_cast<size_t>(row % g.H)];
  return y;
}

TEST(OpsQkPrep, ForwardEqualsNormRopeGain) {
  for (const Geo& g : {Geo{2, 5, 3, 8, 8}, Geo{1, 4, 2, 16, 4}, Geo{2, 3, 2, 6, 0}}) {
    const auto x = randn(static_cast<size_t>(g.B * g.T * g.H * g.D), 11, 2.0);
    const auto gain = randn(static_cast<size_t>(g.H), 12, 0.5);
    std::vector<double> y(x.size()), r(static_cast<size_t>(g.B * g.T * g.H));
    ops::ref::qk_prep_forward(x.data(), gain.data(), y.data(), r.data(), g.B, g.T, g.H, g.D, g.rot, 10000.0, 1e-6, 2);
    expect_close(y, unfused(x, gain, g, 1e-6, 2), 1e-12, "qk_prep vs unfused (double)");
    // The float tensor op (f32 and bf16 storage) against the double reference.
    for (DType dt : {DType::F32, DType::BF16}) {
      Tensor tx = make_tensor(x, Shape{g.B, g.T, g.H, g.D}, dt), ty = Tensor::empty(tx.shape(), dt);
      Tensor tg = make_tensor(gain, Shape{g.H}, DType::F32), tr = Tensor::empty(Shape{g.B * g.T * g.H}, DType::F32);
      ops::qk_prep_forward(tx, tg, ty, tr, g.rot, 10000.f, 1e-6f, 2);
      const auto xr = to_d(tx);  // the stored (possibly bf16-rounded) input
      std::vector<double> want(x.size()), rw(r.size());
      ops::ref::qk_prep_forward(xr.data(), gain.data(), want.data(), rw.data(), g.B, g.T, g.H, g.D, g.rot, 10000.0,
                                1e-6, 2);
      expect_close(to_d(ty), want, tol_for(dt), "qk_prep_forward float op");
      expect_close(to_d(tr), rw, 1e-5, "qk_prep rstd");
    }
  }
}

TEST(OpsQkPrep, BackwardFiniteDifferences) {
  const Geo g{1, 3, 2, 8, 4};
  const size_t n = static_cast<size_t>(g.B * g.T * g.H * g.D), rows = static_cast<size_t>(g.B * g.T * g.H);
  const auto x = randn(n, 21, 1.5), proj = randn(n, 22);
  auto gain = randn(static_cast<size_t>(g.H), 23, 0.5);
  auto loss_x = [&](const std::vector<double>& xx) {
    std::vector<double> y(n), r(rows);
    ops::ref::qk_prep_forward(xx.data(), gain.data(), y.data(), r.data(), g.B, g.T, g.H, g.D, g.rot, 100.0, 1e-6, 1);
    return dot(y, proj);
  };
  auto loss_g = [&](const std::vector<double>& gg) {
    std::vector<double> y(n), r(rows);
    ops::ref::qk_prep_forward(x.data(), gg.data(), y.data(), r.data(), g.B, g.T, g.H, g.D, g.rot, 100.0, 1e-6, 1);
    return dot(y, proj);
  };
  std::vector<double> y(n), r(rows), dx(n), dgain(static_cast<size_t>(g.H), 0.25);  // dgain accumulates onto 0.25
  ops::ref::qk_prep_forward(x.data(), gain.data(), y.data(), r.data(), g.B, g.T, g.H, g.D, g.rot, 100.0, 1e-6, 1);
  ops::ref::qk_prep_backward(x.data(), gain.data(), r.data(), proj.data(), dx.data(), dgain.data(), g.B, g.T, g.H, g.D,
                             g.rot, 100.0, 1);
  expect_grad_matches_fd(loss_x, x, dx, "qk_prep dx");
  for (double& v : dgain) v -= 0.25;
  expect_grad_matches_fd(loss_g, gain, dgain, "qk_prep dgain");

  // The float op agrees with the double reference, and accumulates into dgain.
  const Shape s{g.B, g.T, g.H, g.D};
  Tensor tx = make_tensor(x, s, DType::F32), tdy = make_tensor(proj, s, DType::F32), tdx = Tensor::empty(s, DType::F32);
  Tensor tg = make_tensor(gain, Shape{g.H}, DType::F32), tr = make_tensor(r, Shape{static_cast<int64_t>(rows)}, DType::F32);
  Tensor tdg = make_tensor(std::vector<double>(static_cast<size_t>(g.H), 0.25), Shape{g.H}, DType::F32);
  ops::qk_prep_backward(tx, tg, tr, tdy, tdx, tdg, g.rot, 100.f, 1);
  expect_close(to_d(tdx), dx, 1e-5, "qk_prep dx (float)");
  std::vector<double> dg_want(dgain);
  for (double& v : dg_want) v += 0.25;
  expect_close(to_d(tdg), dg_want, 1e-5, "qk_prep dgain (float, accumulated)");
}

TEST(OpsQkPrep, BadInputsNameTheOp) {
  const Shape s{1, 2, 2, 8};
  Tensor x = rand_tensor(s, DType::F32, 1), y = Tensor::empty(s, DType::F32), r = Tensor::empty(Shape{4}, DType::F32);
  Tensor g3 = Tensor::empty(Shape{3}, DType::F32);
  expect_error_naming([&] { ops::qk_prep_forward(x, Tensor(), x, r, 8, 100.f, 1e-6f); }, "qk_prep_forward");
  expect_error_naming([&] { ops::qk_prep_forward(x, g3, y, r, 8, 100.f, 1e-6f); }, "gain");
  expect_error_naming([&] { ops::qk_prep_forward(x, Tensor(), y, r, 5, 100.f, 1e-6f); }, "rot_dims");
  expect_error_naming([&] { ops::qk_prep_forward(x, Tensor(), y, Tensor::empty(Shape{3}, DType::F32), 8, 100.f, 1e-6f); },
                      "rstd");
  expect_error_naming([&] { ops::qk_prep_backward(x, g3, r, y, y, Tensor(), 8, 100.f); }, "qk_prep_backward");
  Tensor g2 = Tensor::empty(Shape{2}, DType::F32);
  expect_error_naming([&] { ops::qk_prep_backward(x, g2, r, y, Tensor::empty(s, DType::F32), Tensor(), 8, 100.f); },
                      "dgain");
}

// The memory-efficient RMSNorm backward (from y = x r) equals the usual one (from x), in double
// through the float op on f32 storage, and in bf16 within bf16 tolerance; dx may alias dy.
TEST(OpsRmsnorm, BackwardFromOutputEqualsBackwardFromInput) {
  const int64_t N = 6, C = 40;
  const auto x = randn(static_cast<size_t>(N * C), 31, 2.0), dy = randn(static_cast<size_t>(N * C), 32);
  std::vector<double> y(x.size()), r(static_cast<size_t>(N)), want(x.size());
  ops::ref::rmsnorm_forward(x.data(), nullptr, y.data(), r.data(), N, C, 1e-6);
  ops::ref::rmsnorm_backward(x.data(), nullptr, r.data(), dy.data(), want.data(), nullptr, N, C);
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor ty = make_tensor(y, Shape{N, C}, dt), tr = make_tensor(r, Shape{N}, DType::F32);
    Tensor tdy = make_tensor(dy, Shape{N, C}, dt), tdx = Tensor::empty(Shape{N, C}, dt);
    ops::rmsnorm_backward_from_output(ty, tr, tdy, tdx);
    expect_close(to_d(tdx), want, dt == DType::F32 ? 1e-5 : 3e-2, "rmsnorm_backward_from_output");
    // Accumulating into an existing gradient adds the same contribution.
    const auto base = randn(x.size(), 33);
    Tensor tacc = make_tensor(base, Shape{N, C}, dt);
    ops::rmsnorm_backward_from_output(ty, tr, tdy, tacc, /*accumulate=*/true);
    std::vector<double> sum = to_d(tdx);
    const std::vector<double> base_stored = to_d(make_tensor(base, Shape{N, C}, dt));
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += base_stored[i];
    expect_close(to_d(tacc), sum, dt == DType::F32 ? 1e-5 : 3e-2, "rmsnorm_backward_from_output accumulate");
    ops::rmsnorm_backward_from_output(ty, tr, tdy, tdy);  // in place
    expect_close(to_d(tdy), to_d(tdx), 0.0, "rmsnorm_backward_from_output in place");
  }
  Tensor bad = Tensor::empty(Shape{N, C + 1}, DType::F32);
  expect_error_naming([&] {
    ops::rmsnorm_backward_from_output(make_tensor(y, Shape{N, C}, DType::F32), make_tensor(r, Shape{N}, DType::F32),
                                      bad, bad);
  }, "rmsnorm_backward_from_output");
}

}  // namespace
}  // namespace pgolf
