#include <gtest/gtest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/reference.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {
const DType kTypes[] = {DType::F32, DType::BF16};
double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace

TEST(OpsElementwise, BinaryAndScaleMatchReference) {
  for (DType ta : kTypes)
    for (DType to : kTypes) {
      Shape s{7, 13};
      Tensor a = rand_tensor(s, ta, 1), b = rand_tensor(s, DType::F32, 2), out = Tensor::empty(s, to);
      auto av = to_d(a), bv = to_d(b);
      std::vector<double> want(av.size());
      double tol = std::max(tol_for(ta), tol_for(to));

      ops::add(a, b, out);
      for (size_t i = 0; i < want.size(); ++i) want[i] = av[i] + bv[i];
      expect_close(to_d(out), want, tol, "add");

      ops::mul(a, b, out);
      for (size_t i = 0; i < want.size(); ++i) want[i] = av[i] * bv[i];
      expect_close(to_d(out), want, tol, "mul");

      ops::scale(a, -1.5f, out);
      for (size_t i = 0; i < want.size(); ++i) want[i] = -1.5 * av[i];
      expect_close(to_d(out), want, tol, "scale");

      Tensor y = rand_tensor(s, to, 3);
      auto yv = to_d(y);
      ops::axpby(0.5f, a, 2.f, y);
      for (size_t i = 0; i < want.size(); ++i) want[i] = 0.5 * av[i] + 2.0 * yv[i];
      expect_close(to_d(y), want, tol, "axpby");

      ops::fill(y, NAN);
      ops::axpby(3.f, a, 0.f, y);  // beta 0 must overwrite, even NaN
      for (size_t i = 0; i < want.size(); ++i) want[i] = 3.0 * av[i];
      expect_close(to_d(y), want, tol, "axpby beta=0");

      ops::fill(y, 0.25f);
      expect_close(to_d(y), std::vector<double>(want.size(), 0.25), 0, "fill");
    }
}

TEST(OpsElementwise, InPlaceAliasing) {
  Tensor a = rand_tensor(Shape{5, 3}, DType::F32, 4);
  auto av = to_d(a);
  ops::add(a, a, a);
  std::vector<double> want(av.size());
  for (size_t i = 0; i < av.size(); ++i) want[i] = 2 * av[i];
  expect_close(to_d(a), want, 1e-6, "add in place");
}

TEST(OpsElementwise, CopyConvertsDtypes) {
  Tensor src = rand_tensor(Shape{4, 9}, DType::F32, 5);
  auto sv = to_d(src);
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    Tensor mid = Tensor::empty(src.shape(), t), back = Tensor::empty(src.shape(), DType::F32);
    ops::copy(src, mid);
    ops::copy(mid, back);
    expect_close(to_d(back), sv, t == DType::F32 ? 0 : (t == DType::F16 ? 1e-3 : 1e-2), "copy round trip");
  }
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, -2, 3}, Shape{3}), ids2 = Tensor::empty(Shape{3}, DType::I32);
  ops::copy(ids, ids2);
  EXPECT_EQ(ids2.to_int_vector(), (std::vector<int32_t>{1, -2, 3}));
  expect_error_naming([&] { ops::copy(ids, Tensor::empty(Shape{3}, DType::F32)); }, "copy");
}

TEST(OpsElementwise, ChannelFamilies) {
  const int64_t N = 7, C = 13;
  for (DType tx : kTypes) {
    Tensor x = rand_tensor(Shape{N, C}, tx, 6), f = rand_tensor(Shape{N, C}, tx, 7);
    Tensor s = rand_tensor(Shape{C}, DType::F32, 8), s1 = rand_tensor(Shape{C}, DType::F32, 9);
    Tensor out = Tensor::empty(Shape{N, C}, tx);
    auto xv = to_d(x), fv = to_d(f), sv = to_d(s), s1v = to_d(s1);
    std::vector<double> want(static_cast<size_t>(N * C));
    double tol = tol_for(tx);

    ops::mul_channel(x, s, out);
    for (int64_t i = 0; i < N * C; ++i) want[i] = sv[i % C] * xv[i];
    expect_close(to_d(out), want, tol, "mul_channel");

    ops::add_mul_channel(x, s, f, out);
    for (int64_t i = 0; i < N * C; ++i) want[i] = xv[i] + sv[i % C] * fv[i];
    expect_close(to_d(out), want, tol, "add_mul_channel");

    ops::mix_channel(s, x, s1, f, out);
    for (int64_t i = 0; i < N * C; ++i) want[i] = sv[i % C] * xv[i] + s1v[i % C] * fv[i];
    expect_close(to_d(out), want, tol, "mix_channel");

    Tensor ds = Tensor::from_vector(std::vector<float>(C, 1.f), Shape{C});
    ops::channel_dot_accum(x, f, ds);
    std::vector<double> dw(C, 1.0);
    for (int64_t i = 0; i < N * C; ++i) dw[i % C] += xv[i] * fv[i];
    expect_close(to_d(ds), dw, 1e-5, "channel_dot_accum");
  }
}

TEST(OpsElementwise, SigmoidGateForwardMatchesReference) {
  const int64_t N = 7, C = 13;
  for (DType tx : kTypes)
    for (bool per_channel : {true, false}) {
      Tensor g = rand_tensor(per_channel ? Shape{C} : Shape{N, C}, per_channel ? DType::F32 : tx, 10);
      Tensor x = rand_tensor(Shape{N, C}, tx, 11), out = Tensor::empty(Shape{N, C}, tx);
      ops::sigmoid_gate_forward(g, x, out);
      auto gv = to_d(g), xv = to_d(x);
      std::vector<double> want(xv.size());
      for (int64_t i = 0; i < N * C; ++i) want[i] = sigm(gv[per_channel ? i % C : i]) * xv[i];
      expect_close(to_d(out), want, tol_for(tx), "sigmoid_gate_forward");
    }
}

TEST(OpsElementwise, SigmoidGateBackwardFiniteDifferences) {
  const int64_t N = 5, C = 6;
  for (bool per_channel : {true, false}) {
    int64_t G = per_channel ? C : N * C;
    auto g = randn(G, 12), x = randn(N * C, 13), proj = randn(N * C, 14);
    auto loss = [&](const std::vector<double>& gg, const std::vector<double>& xx) {
      std::vector<double> out(N * C);
      ops::ref::sigmoid_gate_forward(gg.data(), xx.data(), out.data(), N, C, per_channel);
      return dot(out, proj);
    };
    std::vector<double> dx(N * C), dg(G, 0.0);
    ops::ref::sigmoid_gate_backward(g.data(), x.data(), proj.data(), dx.data(), dg.data(), N, C, per_channel);
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(g, v); }, x, dx, "gate dx");
    expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(v, x); }, g, dg, "gate dg");

    // The float op (dg accumulated on top of 1.0) matches the double backward.
    Tensor tg = make_tensor(g, per_channel ? Shape{C} : Shape{N, C}, DType::F32);
    Tensor tx = make_tensor(x, Shape{N, C}, DType::F32), td = make_tensor(proj, Shape{N, C}, DType::F32);
    Tensor tdx = Tensor::empty(Shape{N, C}, DType::F32);
    Tensor tdg = Tensor::from_vector(std::vector<float>(G, 1.f), tg.shape());
    ops::sigmoid_gate_backward(tg, tx, td, tdx, tdg);
    for (auto& v : dg) v += 1.0;
    expect_close(to_d(tdx), dx, 1e-5, "gate dx (float)");
    expect_close(to_d(tdg), dg, 1e-5, "gate dg (float)");
  }
}

TEST(OpsElementwise, BadInputsNameTheOp) {
  Tensor a = Tensor::empty(Shape{4, 3}, DType::F32), b = Tensor::empty(Shape{5, 3}, DType::F32);
  Tensor i = Tensor::empty(Shape{4, 3}, DType::I32);
  expect_error_naming([&] { ops::add(a, b, a); }, "add");
  expect_error_naming([&] { ops::mul(a, i, a); }, "mul");
  expect_error_naming([&] { ops::fill(i, 1.f); }, "fill");
  expect_error_naming([&] { ops::mul_channel(a, Tensor::empty(Shape{4}, DType::F32), a); }, "mul_channel");
  expect_error_naming([&] { ops::mul_channel(a, Tensor::empty(Shape{3}, DType::BF16), a); }, "mul_channel");
  expect_error_naming([&] { ops::sigmoid_gate_forward(Tensor::empty(Shape{5}, DType::F32), a, a); },
                      "sigmoid_gate_forward");
}
