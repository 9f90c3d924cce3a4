#include <gtest/gtest.h>

#include <cmath>

#include "ops/cross_entropy.h"
#include "ops/reference.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {

struct CeRef {
  std::vector<double> losses, dlogits, logprobs;
};

// Written from the formulas: c = cap tanh(z/cap), loss = logsumexp(c) - c[t],
// dz = scale (softmax(c) - onehot) (1 - tanh^2).
CeRef naive_ce(const std::vector<double>& z, const std::vector<int32_t>& t, int64_t N, int64_t V, double cap,
               double scale) {
  CeRef r{std::vector<double>(N, 0.0), std::vector<double>(N * V, 0.0), std::vector<double>(N * V)};
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> c(V);
    double m = -1e300, s = 0;
    for (int64_t j = 0; j < V; ++j) {
      c[j] = cap > 0 ? cap * std::tanh(z[n * V + j] / cap) : z[n * V + j];
      m = std::max(m, c[j]);
    }
    for (int64_t j = 0; j < V; ++j) s += std::exp(c[j] - m);
    double lse = m + std::log(s);
    for (int64_t j = 0; j < V; ++j) r.logprobs[n * V + j] = c[j] - lse;
    if (t[n] < 0) continue;
    r.losses[n] = lse - c[t[n]];
    for (int64_t j = 0; j < V; ++j) {
      double th = cap > 0 ? std::tanh(z[n * V + j] / cap) : 0.0;
      r.dlogits[n * V + j] = scale * (std::exp(c[j] - lse) - (j == t[n] ? 1 : 0)) * (1 - th * th);
    }
  }
  return r;
}

}  // namespace

TEST(OpsCrossEntropy, ForwardAndGradientMatchReference) {
  const int64_t N = 7, V = 13;
  std::vector<int32_t> tv{3, 0, 12, -1, 7, 7, 5};
  Tensor targets = Tensor::from_vector(tv, Shape{N});
  for (float cap : {30.f, 0.f, 2.f})
    for (DType tz : {DType::F32, DType::BF16})
      for (DType td : {DType::F32, DType::BF16}) {
        Tensor logits = rand_tensor(Shape{N, V}, tz, 81, 3.0);
        Tensor losses = Tensor::empty(Shape{N}, DType::F32), dl = Tensor::empty(Shape{N, V}, td);
        ops::softcap_cross_entropy(logits, targets, cap, losses, dl, 0.25f);
        CeRef want = naive_ce(to_d(logits), tv, N, V, cap, 0.25);
        expect_close(to_d(losses), want.losses, 1e-5, "ce losses");
        expect_close(to_d(dl), want.dlogits, tol_for(td) * 0.1, "ce dlogits");
        ops::softcap_cross_entropy(logits, targets, cap, losses, Tensor(), 1.f);  // forward only
        expect_close(to_d(losses), want.losses, 1e-5, "ce losses (forward only)");
      }
}

TEST(OpsCrossEntropy, GradientAliasesLogits) {
  const int64_t N = 3, V = 6;
  std::vector<int32_t> tv{1, 5, 0};
  Tensor logits = rand_tensor(Shape{N, V}, DType::F32, 82, 3.0);
  CeRef want = naive_ce(to_d(logits), tv, N, V, 30.0, 1.0);
  Tensor losses = Tensor::empty(Shape{N}, DType::F32);
  ops::softcap_cross_entropy(logits, Tensor::from_vector(tv, Shape{N}), 30.f, losses, logits, 1.f);
  expect_close(to_d(logits), want.dlogits, 1e-6, "ce dlogits in place");
  expect_close(to_d(losses), want.losses, 1e-5, "ce losses in place");
}

TEST(OpsCrossEntropy, FiniteDifferencesOnDoubleKernel) {
  const int64_t N = 3, V = 5;
  std::vector<int32_t> tv{4, -1, 2};
  auto z = randn(N * V, 83, 4.0);
  for (double cap : {3.0, 0.0}) {
    auto loss = [&](const std::vector<double>& zz) {
      std::vector<double> l(N);
      ops::ref::softcap_cross_entropy(zz.data(), tv.data(), N, V, cap, l.data(), nullptr, 1.0);
      return 0.7 * (l[0] + l[1] + l[2]);
    };
    std::vector<double> l(N), dz(N * V);
    ops::ref::softcap_cross_entropy(z.data(), tv.data(), N, V, cap, l.data(), dz.data(), 0.7);
    expect_grad_matches_fd(loss, z, dz, "ce dlogits");
    Tensor tl = Tensor::empty(Shape{N}, DType::F32), td = Tensor::empty(Shape{N, V}, DType::F32);
    ops::softcap_cross_entropy(make_tensor(z, Shape{N, V}, DType::F32), Tensor::from_vector(tv, Shape{N}),
                               static_cast<float>(cap), tl, td, 0.7f);
    expect_close(to_d(td), dz, 1e-5, "ce dlogits (float)");
    expect_close(to_d(tl), l, 1e-5, "ce losses (float)");
  }
}

TEST(OpsCrossEntropy, LogSoftmax) {
  const int64_t N = 4, V = 9;
  for (DType tz : {DType::F32, DType::BF16}) {
    Tensor logits = rand_tensor(Shape{N, V}, tz, 84, 40.0);
    Tensor lp = Tensor::empty(Shape{N, V}, DType::F32);
    ops::softcap_log_softmax(logits, 30.f, lp);
    CeRef want = naive_ce(to_d(logits), std::vector<int32_t>(N, -1), N, V, 30.0, 1.0);
    expect_close(to_d(lp), want.logprobs, 1e-5, "log_softmax");
  }
}

TEST(OpsCrossEntropy, BadInputsNameTheOp) {
  Tensor logits = Tensor::zeros(Shape{2, 4}, DType::F32), losses = Tensor::empty(Shape{2}, DType::F32);
  Tensor t_ok = Tensor::from_vector(std::vector<int32_t>{0, 3}, Shape{2});
  Tensor t_big = Tensor::from_vector(std::vector<int32_t>{0, 4}, Shape{2});
  expect_error_naming([&] { ops::softcap_cross_entropy(logits, t_big, 30.f, losses, Tensor(), 1.f); },
                      "softcap_cross_entropy");
  expect_error_naming(
      [&] { ops::softcap_cross_entropy(logits, t_ok, 30.f, Tensor::empty(Shape{3}, DType::F32), Tensor(), 1.f); },
      "softcap_cross_entropy");
  expect_error_naming(
      [&] { ops::softcap_cross_entropy(logits, Tensor::empty(Shape{2}, DType::F32), 30.f, losses, Tensor(), 1.f); },
      "softcap_cross_entropy");
  expect_error_naming([&] { ops::softcap_log_softmax(logits, 30.f, Tensor::empty(Shape{2, 4}, DType::BF16)); },
                      "softcap_log_softmax");
}
