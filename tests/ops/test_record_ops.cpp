// Ops of the record stack (TECHNIQUES.md §5): XSA, SmearGate v1/v2, scalar mix, document starts.
// Gradients by central finite differences on the double-precision kernels; the float tensor ops
// against the double ones; argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/documents.h"
#include "ops/scalar_mix.h"
#include "ops/smear.h"
#include "ops/xsa.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {

TEST(OpsXsa, ForwardRemovesTheOwnValueComponent) {
  const int64_t B = 2, T = 3, Hq = 4, Hkv = 2, D = 5, rows = B * T;
  auto y = randn(rows * Hq * D, 1), v = randn(rows * Hkv * D, 2);
  std::vector<double> out(y.size());
  ops::ref::xsa_forward(y.data(), v.data(), out.data(), rows, Hq, Hkv, D);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < Hq; ++h) {
      const double* vr = v.data() + (r * Hkv + h / 2) * D;
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += out[(r * Hq + h) * D + d] * vr[d];
      EXPECT_NEAR(dot, 0.0, 1e-12) << "row " << r << " head " << h;
    }
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor ty = make_tensor(y, Shape{B, T, Hq, D}, dt), tv = make_tensor(v, Shape{B, T, Hkv, D}, dt);
    Tensor to = Tensor::empty(ty.shape(), dt);
    ops::xsa_forward(ty, tv, to);
    std::vector<double> want(y.size());
    ops::ref::xsa_forward(to_d(ty).data(), to_d(tv).data(), want.data(), rows, Hq, Hkv, D);
    expect_close(to_d(to), want, dt == DType::F32 ? 1e-5 : 2e-2, "xsa out");
  }
}

TEST(OpsXsa, BackwardMatchesFiniteDifferences) {
  const int64_t B = 1, T = 3, Hq = 4, Hkv = 2, D = 6, rows = B * T;
  auto y = randn(rows * Hq * D, 3), v = randn(rows * Hkv * D, 4), proj = randn(rows * Hq * D, 5);
  auto loss = [&](const std::vector<double>& yy, const std::vector<double>& vv) {
    std::vector<double> out(yy.size());
    ops::ref::xsa_forward(yy.data(), vv.data(), out.data(), rows, Hq, Hkv, D);
    return dot(out, proj);
  };
  std::vector<double> dy(y.size()), dv(v.size());
  ops::ref::xsa_backward(y.data(), v.data(), proj.data(), dy.data(), dv.data(), rows, Hq, Hkv, D);
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(a, v); }, y, dy, "xsa dy");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(y, a); }, v, dv, "xsa dv");
  // The float tensor op agrees with the double kernel, dy aliasing dout included.
  Tensor ty = make_tensor(y, Shape{B, T, Hq, D}, DType::F32), tv = make_tensor(v, Shape{B, T, Hkv, D}, DType::F32);
  Tensor tg = make_tensor(proj, ty.shape(), DType::F32), tdv = Tensor::empty(tv.shape(), DType::F32);
  ops::xsa_backward(ty, tv, tg, tg, tdv);
  expect_close(to_d(tg), dy, 1e-5, "xsa dy (float, in place)");
  expect_close(to_d(tdv), dv, 1e-5, "xsa dv (float)");
}

TEST(OpsXsa, ArgumentErrorsNameTheOp) {
  Tensor y = Tensor::zeros(Shape{1, 2, 3, 4}, DType::F32), v = Tensor::zeros(Shape{1, 2, 2, 4}, DType::F32);
  expect_error_naming([&] { ops::xsa_forward(y, v, Tensor::empty(y.shape(), DType::F32)); }, "xsa_forward");
  Tensor v2 = Tensor::zeros(Shape{1, 2, 1, 4}, DType::BF16);
  expect_error_naming([&] { ops::xsa_forward(y, v2, Tensor::empty(y.shape(), DType::F32)); }, "same dtype");
}

TEST(OpsSmear, V1MatchesFiniteDifferencesAndFloat) {
  const int64_t B = 2, T = 4, C = 3;
  auto x = randn(B * T * C, 6), g = randn(C, 7), proj = randn(B * T * C, 8);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& gg) {
    std::vector<double> out(xx.size());
    ops::ref::smear_v1_forward(xx.data(), gg.data(), out.data(), B, T, C);
    return dot(out, proj);
  };
  std::vector<double> dx(x.size()), dg(C, 0.0);
  ops::ref::smear_v1_backward(x.data(), g.data(), proj.data(), dx.data(), dg.data(), B, T, C);
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(a, g); }, x, dx, "smear_v1 dx");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(x, a); }, g, dg, "smear_v1 dgate");
  // Position 0 of each row sees no predecessor (rows do not leak into each other).
  std::vector<double> out(x.size());
  ops::ref::smear_v1_forward(x.data(), g.data(), out.data(), B, T, C);
  const double s0 = 1.0 / (1.0 + std::exp(-g[0]));
  EXPECT_NEAR(out[T * C], (1 - s0) * x[T * C], 1e-12);
  Tensor tx = make_tensor(x, Shape{B, T, C}, DType::F32), tg = make_tensor(g, Shape{C}, DType::F32);
  Tensor to = Tensor::empty(tx.shape(), DType::F32), tp = make_tensor(proj, tx.shape(), DType::F32);
  Tensor tdx = Tensor::empty(tx.shape(), DType::F32), tdg = Tensor::zeros(Shape{C}, DType::F32);
  ops::smear_v1_forward(tx, tg, to);
  ops::smear_v1_backward(tx, tg, tp, tdx, tdg);
  expect_close(to_d(to), out, 1e-5, "smear_v1 out (float)");
  expect_close(to_d(tdx), dx, 1e-5, "smear_v1 dx (float)");
  expect_close(to_d(tdg), dg, 1e-5, "smear_v1 dgate (float)");
}

TEST(OpsSmear, V2MatchesFiniteDifferencesAndMasksBos) {
  const int64_t B = 2, T = 5, C = 6, W = 4;
  const int bos = 1;
  const std::vector<int32_t> ids = {1, 5, 7, 1, 3, 4, 2, 1, 9, 9};  // BOS at (0,0), (0,3), (1,2)
  auto e = randn(B * T * C, 9), w = randn(W, 10), proj = randn(B * T * C, 11);
  double lambda = 0.7;
  auto loss = [&](const std::vector<double>& ee, const std::vector<double>& ww, double lam) {
    std::vector<double> out(ee.size());
    ops::ref::smear_v2_forward(ee.data(), ids.data(), ww.data(), lam, bos, out.data(), B, T, C, W);
    return dot(out, proj);
  };
  std::vector<double> de(e.size()), dw(W, 0.0), dl(1, 0.0);
  ops::ref::smear_v2_backward(e.data(), ids.data(), w.data(), lambda, bos, proj.data(), de.data(), dw.data(),
                              dl.data(), B, T, C, W);
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(a, w, lambda); }, e, de, "smear_v2 de");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(e, a, lambda); }, w, dw, "smear_v2 dw");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(e, w, a[0]); }, {lambda}, dl,
                         "smear_v2 dlambda");
  std::vector<double> out(e.size());
  ops::ref::smear_v2_forward(e.data(), ids.data(), w.data(), lambda, bos, out.data(), B, T, C, W);
  for (int64_t tok : {0, 3, 5, 7})  // BOS tokens and the first token of a row are untouched
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[tok * C + c], e[tok * C + c]) << "token " << tok;
  EXPECT_NE(out[1 * C], e[1 * C]);
  // Float tensors against the double kernel.
  Tensor te = make_tensor(e, Shape{B, T, C}, DType::F32), tw = make_tensor(w, Shape{W}, DType::F32);
  Tensor tl = Tensor::from_vector(std::vector<float>{static_cast<float>(lambda)}, Shape{1});
  Tensor tids = Tensor::from_vector(ids, Shape{B, T});
  Tensor to = Tensor::empty(te.shape(), DType::F32), tp = make_tensor(proj, te.shape(), DType::F32);
  Tensor tde = Tensor::empty(te.shape(), DType::F32), tdw = Tensor::zeros(Shape{W}, DType::F32),
         tdl = Tensor::zeros(Shape{1}, DType::F32);
  ops::smear_v2_forward(te, tids, tw, tl, bos, to);
  ops::smear_v2_backward(te, tids, tw, tl, bos, tp, tde, tdw, tdl);
  expect_close(to_d(to), out, 1e-5, "smear_v2 out (float)");
  expect_close(to_d(tde), de, 1e-5, "smear_v2 de (float)");
  expect_close(to_d(tdw), dw, 1e-5, "smear_v2 dw (float)");
  expect_close(to_d(tdl), dl, 1e-5, "smear_v2 dlambda (float)");
  expect_error_naming([&] { ops::smear_v2_forward(te, tids, Tensor::zeros(Shape{7}, DType::F32), tl, bos, to); },
                      "gate window");
}

TEST(OpsScalarMix, ForwardAndBackward) {
  const int64_t n = 10;
  auto x0 = randn(n, 12), x1 = randn(n, 13), x2 = randn(n, 14), g = randn(n, 15);
  auto sc = [](float v) { return Tensor::from_vector(std::vector<float>{v}, Shape{1}); };
  Tensor s0 = sc(1.1f), s1 = sc(-0.5f), s2 = sc(2.f);
  Tensor t0 = make_tensor(x0, Shape{n}, DType::F32), t1 = make_tensor(x1, Shape{n}, DType::BF16),
         t2 = make_tensor(x2, Shape{n}, DType::F32), out = Tensor::empty(Shape{n}, DType::F32);
  ops::scalar_mix_forward({{s0, t0, {}, {}}, {s1, t1, {}, {}}, {s2, t2, {}, {}}}, out);
  const auto r1 = to_d(t1);
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = 1.1 * x0[i] - 0.5 * r1[i] + 2.0 * x2[i];
  expect_close(to_d(out), want, 1e-5, "scalar_mix out");
  Tensor tg = make_tensor(g, Shape{n}, DType::F32), dx0 = Tensor::empty(Shape{n}, DType::F32);
  Tensor ds0 = sc(1.f), ds1 = sc(0.f);
  ops::scalar_mix_backward({{s0, t0, dx0, ds0}, {s1, t1, {}, ds1}, {s2, t2, {}, {}}}, tg);
  std::vector<double> want_dx(n);
  for (int64_t i = 0; i < n; ++i) want_dx[i] = 1.1 * g[i];
  expect_close(to_d(dx0), want_dx, 1e-5, "scalar_mix dx0");
  expect_close(to_d(ds0), {1.0 + dot(g, x0)}, 1e-5, "scalar_mix ds0 (accumulated)");
  expect_close(to_d(ds1), {dot(g, r1)}, 1e-5, "scalar_mix ds1");
  expect_error_naming([&] { ops::scalar_mix_forward({{s0, out, {}, {}}}, out); }, "scalar_mix_forward");
}

TEST(OpsDocuments, StartsFollowBos) {
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 1, 4, 4, 1, 1, 1, 2, 3, 3, 3, 1}, Shape{2, 6});
  Tensor out = Tensor::empty(Shape{2, 6}, DType::I32);
  ops::doc_starts(ids, 1, out);
  const int32_t* o = out.ptr<int32_t>();
  EXPECT_EQ(std::vector<int32_t>(o, o + 12), (std::vector<int32_t>{0, 1, 1, 1, 4, 5, 0, 0, 0, 0, 0, 5}));
  expect_error_naming([&] { ops::doc_starts(ids, 1, Tensor::empty(Shape{2, 5}, DType::I32)); }, "doc_starts");
}

}  // namespace
