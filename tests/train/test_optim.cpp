#include <gtest/gtest.h>

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "model/params.h"
#include "train/adam.h"
#include "train/int8_export.h"
#include "train/muon.h"

using namespace pgolf;
using namespace pgolf::train;

namespace {

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<double> singular_values(const std::vector<float>& a, int64_t R, int64_t C) {
  std::vector<double> m(a.begin(), a.end()), s(static_cast<size_t>(std::min(R, C)));
  std::vector<double> superb(s.size());
  int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', static_cast<lapack_int>(R), static_cast<lapack_int>(C), m.data(),
                            static_cast<lapack_int>(C), s.data(), nullptr, 1, nullptr, 1, superb.data());
  EXPECT_EQ(info, 0);
  return s;
}

model::Param make_param(const std::string& name, Shape shape, model::OptGroup g) {
  model::Param p;
  p.spec.name = name;
  p.spec.shape = shape;
  p.spec.group = g;
  p.spec.weight_decay = 1.f;
  p.value = Tensor::zeros(shape, DType::F32);
  p.grad = Tensor::zeros(shape, DType::F32);
  return p;
}

}  // namespace

TEST(TrainMuon, NewtonSchulzOrthogonalisesWideAndTall) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{24, 48}, {48, 24}, {32, 32}}) {
    auto g = gaussian(static_cast<size_t>(R * C), 7);
    NsScratch s = NsScratch::make(R, C, DType::F32, Device::CPU);
    s.x0.copy_from(Tensor::from_vector(g, Shape{R, C}));
    Tensor x = newton_schulz(s.x0, s, ns_coefficients_baseline(), 5);
    auto sv = singular_values(x.to_float_vector(), R, C);
    auto sv_in = singular_values(g, R, C);
    // The input spreads over a wide range; NS5 maps every singular value into its band around 1.
    EXPECT_LT(sv_in.back() / sv_in.front(), 0.35) << R << "x" << C;
    for (double v : sv) {
      EXPECT_GT(v, 0.6) << R << "x" << C;
      EXPECT_LT(v, 1.25) << R << "x" << C;
    }
  }
}

TEST(TrainMuon, TallIterationIsTheTransposeOfWide) {
  const int64_t R = 40, C = 16;
  auto g = gaussian(static_cast<size_t>(R * C), 11);
  std::vector<float> gt(g.size());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) gt[static_cast<size_t>(c * R + r)] = g[static_cast<size_t>(r * C + c)];
  NsScratch tall = NsScratch::make(R, C, DType::F32, Device::CPU), wide = NsScratch::make(C, R, DType::F32, Device::CPU);
  tall.x0.copy_from(Tensor::from_vector(g, Shape{R, C}));
  wide.x0.copy_from(Tensor::from_vector(gt, Shape{C, R}));
  auto a = newton_schulz(tall.x0, tall, ns_coefficients_polar_express(), 5).to_float_vector();
  auto b = newton_schulz(wide.x0, wide, ns_coefficients_polar_express(), 5).to_float_vector();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(a[static_cast<size_t>(r * C + c)], b[static_cast<size_t>(c * R + r)], 1e-4f);
}

// A stack (K, R, C) orthogonalised with batched products equals each matrix done alone, bit for bit on
// the CPU (the single-rank Muon step uses stacks; the sharded one single matrices).
TEST(TrainMuon, StackedNewtonSchulzEqualsOneMatrixAtATime) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{12, 20}, {20, 12}}) {
    const int64_t K = 3;
    auto g = gaussian(static_cast<size_t>(K * R * C), 13);
    NsScratch st = NsScratch::make(R, C, DType::F32, Device::CPU, K);
    st.x0.copy_from(Tensor::from_vector(g, Shape{K, R, C}));
    const std::vector<float> stacked = newton_schulz(st.x0, st, ns_coefficients_polar_express(), 5).to_float_vector();
    for (int64_t k = 0; k < K; ++k) {
      NsScratch one = NsScratch::make(R, C, DType::F32, Device::CPU);
      one.x0.copy_from(Tensor::from_vector(std::vector<float>(g.begin() + k * R * C, g.begin() + (k + 1) * R * C),
                                           Shape{R, C}));
      const std::vector<float> alone = newton_schulz(one.x0, one, ns_coefficients_polar_express(), 5).to_float_vector();
      ASSERT_TRUE(std::equal(alone.begin(), alone.end(), stacked.begin() + k * R * C)) << R << "x" << C << " #" << k;
    }
  }
}

TEST(TrainMuon, StepAppliesNesterovMomentumAndShapeScale) {
  // A tall (8, 2) matrix: shape scale sqrt(4) = 2.
  model::Param p = make_param("w", Shape{8, 2}, model::OptGroup::Muon);
  auto w0 = gaussian(16, 1), g = gaussian(16, 2);
  p.value.copy_from(Tensor::from_vector(w0, Shape{8, 2}));
  p.grad.copy_from(Tensor::from_vector(g, Shape{8, 2}));
  MuonOptions mo;
  Muon muon({&p}, mo, Device::CPU);
  const float lr = 0.1f, mu = 0.9f;
  auto hp_apply = muon.apply_hp(0, lr, 0.f);
  EXPECT_FLOAT_EQ(hp_apply[2], 2.f);
  Tensor hpm = Tensor::from_vector(std::vector<float>{mu, 1.f}, Shape{2});
  Tensor hpa = Tensor::from_vector(std::vector<float>(hp_apply.begin(), hp_apply.end()), Shape{3});
  muon.step(hpm, hpa);
  // Expected: buf = g ; u = g + mu * buf = (1 + mu) g ; X = NS(u) ; w = w0 - lr * 2 * X.
  std::vector<float> u(16);
  for (size_t i = 0; i < 16; ++i) u[i] = (1 + mu) * g[i];
  NsScratch s = NsScratch::make(8, 2, DType::F32, Device::CPU);
  s.x0.copy_from(Tensor::from_vector(u, Shape{8, 2}));
  auto x = newton_schulz(s.x0, s, ns_coefficients_baseline(), 5).to_float_vector();
  auto w = p.value.to_float_vector();
  auto buf = muon.momentum_buffers()[0].to_float_vector();
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_NEAR(w[i], w0[i] - lr * 2.f * x[i], 1e-5f);
    EXPECT_FLOAT_EQ(buf[i], g[i]);
  }
}

TEST(TrainAdam, MatchesHandComputationOverThreeSteps) {
  model::Param p = make_param("s", Shape{4}, model::OptGroup::AdamScalar);
  std::vector<double> w = {0.5, -1.0, 2.0, 0.0}, m(4, 0), v(4, 0);
  p.value.copy_from(Tensor::from_vector(std::vector<float>(w.begin(), w.end()), Shape{4}));
  Adam adam({&p}, Device::CPU);
  AdamGroupHP hp;
  hp.lr = 0.05f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  const std::vector<std::vector<float>> grads = {{1, -2, 0.5, 0}, {0.3, 0.1, -1, 2}, {-1, 1, 1, -3}};
  for (int t = 1; t <= 3; ++t) {
    p.grad.copy_from(Tensor::from_vector(grads[static_cast<size_t>(t - 1)], Shape{4}));
    auto h = adam.hp_values(0, hp, t, 1.f);
    adam.step(Tensor::from_vector(std::vector<float>(h.begin(), h.end()), Shape{8}));
    for (size_t i = 0; i < 4; ++i) {  // torch.optim.Adam, written out
      const double gi = grads[static_cast<size_t>(t - 1)][i];
      m[i] = 0.9 * m[i] + 0.1 * gi;
      v[i] = 0.95 * v[i] + 0.05 * gi * gi;
      const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.95, t));
      w[i] -= 0.05 * mhat / (std::sqrt(vhat) + 1e-8);
    }
  }
  auto got = p.value.to_float_vector();
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], w[i], 1e-6) << i;
}

TEST(TrainInt8, QuantileMatchesTorchLinearInterpolation) {
  std::vector<float> x = {4, 1, 3, 2};  // sorted 1 2 3 4; q = 0.5 -> pos 1.5 -> 2.5
  EXPECT_FLOAT_EQ(quantile_linear(x, 0.5), 2.5f);
  x = {4, 1, 3, 2};
  EXPECT_FLOAT_EQ(quantile_linear(x, 1.0), 4.f);
  x = {4, 1, 3, 2};
  EXPECT_FLOAT_EQ(quantile_linear(x, 0.0), 1.f);
}

TEST(TrainInt8, RoundTripErrorIsBoundedByHalfAStep) {
  model::ParamTable t;
  t.add(model::ParamSpec{"big.weight", Shape{300, 256}, model::OptGroup::Muon});
  t.add(model::ParamSpec{"blocks.0.attn_scale", Shape{64}, model::OptGroup::AdamScalar});
  t.add(model::ParamSpec{"small.weight", Shape{16, 16}, model::OptGroup::Muon});
  t.allocate(Device::CPU, DType::F32);
  std::vector<std::vector<float>> orig;
  for (auto& p : t.all()) {
    auto v = gaussian(static_cast<size_t>(p.value.numel()), 3);
    for (auto& x : v) x *= 0.05f;
    if (p.spec.name == "big.weight") v[5] = 3.f;  // an outlier row gets its own larger scale
    p.value.copy_from(Tensor::from_vector(v, p.value.shape()));
    orig.push_back(v);
  }
  std::string blob = zlib_compress(int8_serialize(t));
  EXPECT_LT(blob.size(), 300u * 256u + 20000u);
  int8_deserialize_into(zlib_decompress(blob), t);
  auto big = t.all()[0].value.to_float_vector();
  for (size_t i = 256; i < big.size(); ++i) EXPECT_NEAR(big[i], orig[0][i], 0.5f / 127.f + 1e-4f);  // rows 1..: scale 1/127 (+ its fp16 rounding)
  EXPECT_EQ(t.all()[1].value.to_float_vector(), orig[1]);                 // control tensor kept fp32
  auto small = t.all()[2].value.to_float_vector();
  for (size_t i = 0; i < small.size(); ++i) EXPECT_NEAR(small[i], orig[2][i], 1e-4f);  // fp16
}
