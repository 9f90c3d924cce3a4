#include <gtest/gtest.h>

#include <cmath>

#include "ops/activation.h"
#include "ops/reference.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {
const DType kTypes[] = {DType::F32, DType::BF16};
}

TEST(OpsRmsnorm, ForwardMatchesReference) {
  const int64_t N = 7, C = 13;
  const float eps = 1e-6f;
  for (DType tx : kTypes)
    for (DType ty : kTypes)
      for (bool with_gain : {true, false}) {
        Tensor x = rand_tensor(Shape{N, C}, tx, 41, 2.0), y = Tensor::empty(Shape{N, C}, ty);
        Tensor gain = with_gain ? rand_tensor(Shape{C}, DType::F32, 42) : Tensor();
        Tensor rstd = Tensor::empty(Shape{N}, DType::F32);
        ops::rmsnorm_forward(x, gain, y, rstd, eps);
        auto xv = to_d(x);
        auto gv = with_gain ? to_d(gain) : std::vector<double>(C, 1.0);
        std::vector<double> want(N * C), wr(N);
        for (int64_t n = 0; n < N; ++n) {
          double ms = 0;
          for (int64_t c = 0; c < C; ++c) ms += xv[n * C + c] * xv[n * C + c] / C;
          wr[n] = 1.0 / std::sqrt(ms + eps);
          for (int64_t c = 0; c < C; ++c) want[n * C + c] = xv[n * C + c] * wr[n] * gv[c];
        }
        expect_close(to_d(y), want, std::max(tol_for(tx), tol_for(ty)), "rmsnorm y");
        expect_close(to_d(rstd), wr, 1e-5, "rmsnorm rstd");
      }
}

TEST(OpsRmsnorm, BackwardFiniteDifferencesAndFloatMatch) {
  const int64_t N = 4, C = 9;
  const double eps = 1e-5;
  for (bool with_gain : {true, false}) {
    auto x = randn(N * C, 43), g = randn(C, 44), proj = randn(N * C, 45);
    auto loss = [&](const std::vector<double>& xx, const std::vector<double>& gg) {
      std::vector<double> y(N * C), r(N);
      ops::ref::rmsnorm_forward(xx.data(), with_gain ? gg.data() : nullptr, y.data(), r.data(), N, C, eps);
      return dot(y, proj);
    };
    std::vector<double> y(N * C), r(N), dx(N * C), dg(C, 0.0);
    const double* gp = with_gain ? g.data() : nullptr;
    ops::ref::rmsnorm_forward(x.data(), gp, y.data(), r.data(), N, C, eps);
    ops::ref::rmsnorm_backward(x.data(), gp, r.data(), proj.data(), dx.data(), dg.data(), N, C);
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(v, g); }, x, dx, "rmsnorm dx");
    if (with_gain) expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(x, v); }, g, dg, "rmsnorm dgain");

    Tensor tx = make_tensor(x, Shape{N, C}, DType::F32), tg = with_gain ? make_tensor(g, Shape{C}, DType::F32) : Tensor();
    Tensor ty = Tensor::empty(Shape{N, C}, DType::F32), tr = Tensor::empty(Shape{N}, DType::F32);
    Tensor tdy = make_tensor(proj, Shape{N, C}, DType::F32);
    Tensor tdg = Tensor::zeros(Shape{C}, DType::F32);
    ops::rmsnorm_forward(tx, tg, ty, tr, static_cast<float>(eps));
    ops::rmsnorm_backward(tx, tg, tr, tdy, tdy, tdg);  // dx aliases dy
    expect_close(to_d(tdy), dx, 1e-5, "rmsnorm dx (float, in place)");
    if (with_gain) expect_close(to_d(tdg), dg, 1e-5, "rmsnorm dgain (float)");
  }
}

TEST(OpsRmsnorm, BadInputsNameTheOp) {
  Tensor x = Tensor::empty(Shape{4, 6}, DType::F32), r = Tensor::empty(Shape{4}, DType::F32);
  expect_error_naming([&] { ops::rmsnorm_forward(x, Tensor::empty(Shape{5}, DType::F32), x, r, 1e-6f); },
                      "rmsnorm_forward");
  expect_error_naming([&] { ops::rmsnorm_forward(x, Tensor(), x, Tensor::empty(Shape{4}, DType::BF16), 1e-6f); },
                      "rmsnorm_forward");
  expect_error_naming([&] { ops::rmsnorm_backward(x, Tensor(), r, Tensor::empty(Shape{4, 5}, DType::F32), x, Tensor()); },
                      "rmsnorm_backward");
}

TEST(OpsRope, ForwardMatchesReferenceIncludingPassThrough) {
  const int64_t B = 2, T = 5, H = 3, D = 8;
  const int rot = 4;
  const float base = 10000.f;
  const int64_t off = 3;
  for (DType t : kTypes) {
    Tensor x = rand_tensor(Shape{B, T, H, D}, t, 51), y = Tensor::empty(x.shape(), t);
    ops::rope_forward(x, y, rot, base, off);
    auto xv = to_d(x);
    std::vector<double> want(xv);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t tt = 0; tt < T; ++tt)
        for (int64_t h = 0; h < H; ++h)
          for (int i = 0; i < rot / 2; ++i) {
            double ang = (off + tt) * std::pow(double(base), -2.0 * i / rot);
            int64_t o = ((b * T + tt) * H + h) * D;
            double a = xv[o + i], c = xv[o + i + rot / 2];
            want[o + i] = a * std::cos(ang) - c * std::sin(ang);
            want[o + i + rot / 2] = c * std::cos(ang) + a * std::sin(ang);
          }
    expect_close(to_d(y), want, tol_for(t) * 2, "rope_forward");
    // Backward is the inverse rotation: R^T R x = x (in place).
    if (t == DType::F32) {
      ops::rope_backward(y, y, rot, base, off);
      expect_close(to_d(y), xv, 1e-5, "rope backward(forward(x))");
    }
  }
}

TEST(OpsRope, BackwardFiniteDifferences) {
  const int64_t B = 1, T = 4, H = 2, D = 6;
  const int rot = 6;
  auto x = randn(B * T * H * D, 52), proj = randn(B * T * H * D, 53);
  auto loss = [&](const std::vector<double>& xx) {
    std::vector<double> y(xx.size());
    ops::ref::rope_forward(xx.data(), y.data(), B, T, H, D, rot, 100.0, 2);
    return dot(y, proj);
  };
  std::vector<double> dx(x.size());
  ops::ref::rope_backward(proj.data(), dx.data(), B, T, H, D, rot, 100.0, 2);
  expect_grad_matches_fd(loss, x, dx, "rope dx");
  Tensor tdy = make_tensor(proj, Shape{B, T, H, D}, DType::F32), tdx = Tensor::empty(tdy.shape(), DType::F32);
  ops::rope_backward(tdy, tdx, rot, 100.f, 2);
  expect_close(to_d(tdx), dx, 1e-5, "rope dx (float)");
  expect_error_naming([&] { ops::rope_forward(tdy, tdx, 3, 100.f); }, "rope_forward");
  expect_error_naming([&] { ops::rope_forward(tdy, tdx, 8, 100.f); }, "rope_forward");
  expect_error_naming([&] { ops::rope_backward(tdy, Tensor::empty(Shape{1, 4, 2, 7}, DType::F32), 2, 100.f); },
                      "rope_backward");
}

TEST(OpsActivation, ForwardAndBackward) {
  const int64_t n = 91;
  for (ops::Act act : {ops::Act::Relu2, ops::Act::LeakyRelu2}) {
    const double slope = 0.5;
    auto a = [&](double v) { return v > 0 ? v : (act == ops::Act::Relu2 ? 0.0 : slope * v); };
    for (DType tx : kTypes) {
      Tensor x = rand_tensor(Shape{7, 13}, tx, 61), y = Tensor::empty(Shape{7, 13}, DType::F32);
      ops::activation_forward(act, x, y, static_cast<float>(slope));
      auto xv = to_d(x);
      std::vector<double> want(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) want[i] = a(xv[i]) * a(xv[i]);
      expect_close(to_d(y), want, tol_for(tx), "activation_forward");
    }
    auto x = randn(n, 62), proj = randn(n, 63);
    for (auto& v : x)
      if (std::fabs(v) < 1e-3) v = 0.1;  // keep finite differences away from the kink at 0
    auto loss = [&](const std::vector<double>& xx) {
      std::vector<double> y(n);
      ops::ref::activation_forward(act, xx.data(), y.data(), n, slope);
      return dot(y, proj);
    };
    std::vector<double> dx(n);
    ops::ref::activation_backward(act, x.data(), proj.data(), dx.data(), n, slope);
    expect_grad_matches_fd(loss, x, dx, "activation dx");
    Tensor tx = make_tensor(x, Shape{n}, DType::F32), tdy = make_tensor(proj, Shape{n}, DType::F32);
    ops::activation_backward(act, tx, tdy, tdy, static_cast<float>(slope));  // dx aliases dy
    expect_close(to_d(tdy), dx, 1e-5, "activation dx (float)");
  }
  Tensor x = Tensor::empty(Shape{4}, DType::F32);
  expect_error_naming([&] { ops::activation_forward(ops::Act::Relu2, x, Tensor::empty(Shape{5}, DType::F32)); },
                      "activation_forward");
  expect_error_naming([&] { ops::activation_backward(ops::Act::Relu2, x, x, Tensor::empty(Shape{4}, DType::I32)); },
                      "activation_backward");
}
