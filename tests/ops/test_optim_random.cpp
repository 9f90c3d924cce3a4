#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "ops/optim.h"
#include "ops/random.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

TEST(OpsOptim, AdamStepFollowsTheDocumentedUpdate) {
  const int64_t n = 23;
  auto p0 = randn(n, 101), g = randn(n, 102), m0 = randn(n, 103, 0.1), v0 = randn(n, 104, 0.1);
  for (auto& x : v0) x = std::fabs(x);
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, bc1 = 1 - std::pow(b1, 3),
               bc2 = 1 - std::pow(b2, 3), gs = 0.5;
  Tensor p = make_tensor(p0, Shape{n}, DType::F32), tg = make_tensor(g, Shape{n}, DType::F32);
  Tensor m = make_tensor(m0, Shape{n}, DType::F32), v = make_tensor(v0, Shape{n}, DType::F32);
  Tensor hp = make_tensor({lr, b1, b2, eps, wd, bc1, bc2, gs}, Shape{8}, DType::F32);
  ops::adam_step(p, tg, m, v, hp);
  std::vector<double> wp(n), wm(n), wv(n);
  for (int64_t i = 0; i < n; ++i) {
    double gi = g[i] * gs;
    wm[i] = b1 * m0[i] + (1 - b1) * gi;
    wv[i] = b2 * v0[i] + (1 - b2) * gi * gi;
    wp[i] = p0[i] * (1 - lr * wd) - lr * (wm[i] / bc1) / (std::sqrt(wv[i] / bc2) + eps);
  }
  expect_close(to_d(m), wm, 1e-5, "adam m");
  expect_close(to_d(v), wv, 1e-5, "adam v");
  expect_close(to_d(p), wp, 1e-5, "adam p");
  expect_error_naming([&] { ops::adam_step(p, tg, m, v, Tensor::zeros(Shape{7}, DType::F32)); }, "adam_step");
  expect_error_naming([&] { ops::adam_step(p, Tensor::zeros(Shape{n}, DType::BF16), m, v, hp); }, "adam_step");
}

TEST(OpsOptim, MuonMomentumApplyAndRowNormalize) {
  const int64_t R = 5, C = 7;
  for (bool nesterov : {true, false})
    for (DType tu : {DType::F32, DType::BF16}) {
      auto g = randn(R * C, 111), b0 = randn(R * C, 112);
      Tensor tg = make_tensor(g, Shape{R, C}, DType::F32), buf = make_tensor(b0, Shape{R, C}, DType::F32);
      Tensor u = Tensor::empty(Shape{R, C}, tu);
      const double mu = 0.95, gs = 2.0;
      ops::muon_momentum(tg, buf, u, make_tensor({mu, gs}, Shape{2}, DType::F32), nesterov);
      std::vector<double> wb(R * C), wu(R * C);
      for (int64_t i = 0; i < R * C; ++i) {
        double gi = g[i] * gs;
        wb[i] = mu * b0[i] + gi;
        wu[i] = nesterov ? gi + mu * wb[i] : wb[i];
      }
      expect_close(to_d(buf), wb, 1e-5, "muon buf");
      expect_close(to_d(u), wu, tol_for(tu), "muon u");

      // Row normalisation in place; a zero row stays zero (eps guards the division).
      Tensor x = make_tensor(wu, Shape{R, C}, tu);
      for (int64_t c = 0; c < C; ++c) {
        if (tu == DType::F32) x.ptr<float>()[c] = 0.f;
        else x.ptr<bf16>()[c] = f32_to_bf16(0.f);
      }
      auto xv = to_d(x);
      ops::row_normalize(x, 1e-7f);
      std::vector<double> wx(xv);
      for (int64_t r = 0; r < R; ++r) {
        double ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += xv[r * C + c] * xv[r * C + c];
        for (int64_t c = 0; c < C; ++c) wx[r * C + c] = xv[r * C + c] / std::max(std::sqrt(ss), 1e-7);
      }
      expect_close(to_d(x), wx, tol_for(tu), "row_normalize");

      auto p0 = randn(R * C, 113);
      Tensor p = make_tensor(p0, Shape{R, C}, DType::F32);
      const double lr = 0.02, wd = 0.05, ss = 1.5;
      ops::muon_apply(p, x, make_tensor({lr, wd, ss}, Shape{3}, DType::F32));
      auto xn = to_d(x);
      std::vector<double> wp(R * C);
      for (int64_t i = 0; i < R * C; ++i) wp[i] = p0[i] * (1 - lr * wd) - lr * ss * xn[i];
      expect_close(to_d(p), wp, 1e-5, "muon_apply");
    }
  Tensor g = Tensor::zeros(Shape{3, 4}, DType::F32);
  expect_error_naming([&] { ops::muon_momentum(g, Tensor::zeros(Shape{4, 3}, DType::F32), g, Tensor::zeros(Shape{2}, DType::F32), true); },
                      "muon_momentum");
  expect_error_naming([&] { ops::muon_apply(g, g, Tensor::zeros(Shape{2}, DType::F32)); }, "muon_apply");
  expect_error_naming([&] { ops::row_normalize(Tensor::zeros(Shape{3}, DType::I32), 1e-7f); }, "row_normalize");
}

TEST(OpsOptim, EmaUpdate) {
  auto a0 = randn(9, 121), p0 = randn(9, 122);
  Tensor a = make_tensor(a0, Shape{3, 3}, DType::F32), p = make_tensor(p0, Shape{3, 3}, DType::F32);
  ops::ema_update(a, p, make_tensor({0.9}, Shape{1}, DType::F32));
  std::vector<double> want(9);
  for (int i = 0; i < 9; ++i) want[i] = 0.9 * a0[i] + 0.1 * p0[i];
  expect_close(to_d(a), want, 1e-6, "ema");
  expect_error_naming([&] { ops::ema_update(a, Tensor::zeros(Shape{9}, DType::F32), Tensor::zeros(Shape{1}, DType::F32)); },
                      "ema_update");
}

TEST(OpsRandom, FillsUseTheCounterRng) {
  const int64_t n = 4000;
  for (DType t : {DType::F32, DType::BF16}) {
    Tensor u = Tensor::empty(Shape{n}, t), z = Tensor::empty(Shape{n}, t);
    ops::fill_uniform(u, 7, 100, -2.f, 3.f);
    ops::fill_normal(z, 7, 100, 1.f, 0.5f);
    auto uv = to_d(u), zv = to_d(z);
    double su = 0, sz = 0, sz2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      // Exactly the RNG's value for counter offset + i (rounded to the tensor's dtype).
      double eu = rng::uniform(7, 100 + i, -2.f, 3.f), ez = 1.0 + 0.5 * rng::normal(7, 100 + i);
      EXPECT_NEAR(uv[i], eu, t == DType::BF16 ? 1e-2 * std::fabs(eu) + 1e-6 : 0.0);
      EXPECT_NEAR(zv[i], ez, t == DType::BF16 ? 1e-2 * std::fabs(ez) + 1e-6 : 1e-6);
      EXPECT_GE(uv[i], -2.0);
      EXPECT_LE(uv[i], 3.0);
      su += uv[i];
      sz += zv[i];
      sz2 += (zv[i] - 1) * (zv[i] - 1);
    }
    EXPECT_NEAR(su / n, 0.5, 0.1);
    EXPECT_NEAR(sz / n, 1.0, 0.05);
    EXPECT_NEAR(std::sqrt(sz2 / n), 0.5, 0.05);
  }
  // A slice regenerates independently: element i of a fill at offset 10 is element i + 10 at offset 0.
  Tensor a = Tensor::empty(Shape{20}, DType::F32), b = Tensor::empty(Shape{10}, DType::F32);
  ops::fill_normal(a, 3, 0, 0.f, 1.f);
  ops::fill_normal(b, 3, 10, 0.f, 1.f);
  auto av = to_d(a), bv = to_d(b);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(bv[i], av[i + 10]);
  expect_error_naming([&] { ops::fill_uniform(Tensor::empty(Shape{2}, DType::I32), 1, 0, 0.f, 1.f); }, "fill_uniform");
  expect_error_naming([&] { ops::fill_normal(a, 1, 0, 0.f, -1.f); }, "fill_normal");
}
