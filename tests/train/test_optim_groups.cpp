// The optimizer's per-group learning rates and decoupled weight decay (§6.3, §6.4), AdamW against a
// hand computation, and global grad-norm clipping (§6.5), on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "model/params.h"
#include "ops/reduce.h"
#include "train/adam.h"
#include "train/config.h"
#include "train/optimizer.h"

using namespace pgolf;
using namespace pgolf::train;

namespace {

std::vector<float> gaussian(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// One parameter of each optimizer group, values random, grads zero.
struct Table {
  model::ParamTable t;
  Table() {
    t.add(model::ParamSpec{"w", Shape{4, 6}, model::OptGroup::Muon, 1.f});
    t.add(model::ParamSpec{"tok_emb.weight", Shape{8, 6}, model::OptGroup::AdamEmbed, 1.f});
    t.add(model::ParamSpec{"s", Shape{6}, model::OptGroup::AdamScalar, 1.f});
    t.allocate(Device::CPU, DType::F32);
    uint32_t seed = 1;
    for (auto& p : t.all()) p.value.copy_from(Tensor::from_vector(gaussian(p.value.numel(), seed++), p.value.shape()));
  }
  std::vector<float> value(const std::string& n) { return t.get(n).value.to_float_vector(); }
  void set_grads(float scale) {
    uint32_t seed = 10;
    for (auto& p : t.all()) p.grad.copy_from(Tensor::from_vector(gaussian(p.grad.numel(), seed++, scale), p.grad.shape()));
  }
};

OptimSection groups_cfg() {
  OptimSection o;
  o.matrix_lr = 0.1;
  o.muon_weight_decay = 0.5;
  o.tied_embed_lr = 0.2;
  o.embed_weight_decay = 0.25;
  o.scalar_lr = 0.3;
  o.scalar_weight_decay = 0.125;
  return o;
}

void expect_scaled(const std::vector<float>& got, const std::vector<float>& before, double factor, const char* what) {
  ASSERT_EQ(got.size(), before.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], before[i] * factor, 1e-6) << what << " element " << i << " factor " << factor;
}

}  // namespace

TEST(TrainWeightDecay, EachGroupDecaysWithItsOwnLrAndWd) {
  // Zero gradients: Muon's orthogonalised update and Adam's m / (sqrt(v) + eps) are 0, so one step
  // leaves exactly the decoupled decay p <- p (1 - lr_group * lr_mult * wd_group).
  Table tb;
  auto w0 = tb.value("w"), e0 = tb.value("tok_emb.weight"), s0 = tb.value("s");
  Optimizer opt(tb.t, groups_cfg(), Device::CPU, DType::F32);
  const double lr_mult = 0.5;
  opt.step(0, lr_mult);
  expect_scaled(tb.value("w"), w0, 1 - 0.1 * lr_mult * 0.5, "muon");
  expect_scaled(tb.value("tok_emb.weight"), e0, 1 - 0.2 * lr_mult * 0.25, "embed");
  expect_scaled(tb.value("s"), s0, 1 - 0.3 * lr_mult * 0.125, "scalar");
}

TEST(TrainWeightDecay, TaperScalesOnlyMuonDecay) {
  Table tb;
  auto w0 = tb.value("w"), s0 = tb.value("s");
  Optimizer opt(tb.t, groups_cfg(), Device::CPU, DType::F32);
  opt.set_muon_wd_multiplier(0.5);
  opt.step(0, 1.0);
  expect_scaled(tb.value("w"), w0, 1 - 0.1 * 0.5 * 0.5, "muon tapered");
  expect_scaled(tb.value("s"), s0, 1 - 0.3 * 0.125, "scalar untouched by the taper");
}

TEST(TrainWeightDecay, NoDecayByDefault) {
  Table tb;
  auto w0 = tb.value("w"), e0 = tb.value("tok_emb.weight");
  Optimizer opt(tb.t, OptimSection{}, Device::CPU, DType::F32);
  opt.step(0, 1.0);
  expect_scaled(tb.value("w"), w0, 1.0, "muon");
  expect_scaled(tb.value("tok_emb.weight"), e0, 1.0, "embed");
}

TEST(TrainAdam, AdamWMatchesHandComputation) {
  model::ParamTable t;
  t.add(model::ParamSpec{"s", Shape{4}, model::OptGroup::AdamScalar, 1.f});
  t.allocate(Device::CPU, DType::F32);
  model::Param& p = t.get("s");
  std::vector<double> w = {0.5, -1.0, 2.0, 0.0}, m(4, 0), v(4, 0);
  p.value.copy_from(Tensor::from_vector(std::vector<float>(w.begin(), w.end()), Shape{4}));
  Adam adam({&p}, Device::CPU);
  AdamGroupHP hp;
  hp.lr = 0.05f;
  hp.beta2 = 0.99f;
  hp.weight_decay = 0.1f;
  const std::vector<std::vector<float>> grads = {{1, -2, 0.5, 0}, {0.3, 0.1, -1, 2}, {-1, 1, 1, -3}};
  for (int s = 1; s <= 3; ++s) {
    p.grad.copy_from(Tensor::from_vector(grads[static_cast<size_t>(s - 1)], Shape{4}));
    auto h = adam.hp_values(0, hp, s, 1.f);
    adam.step(Tensor::from_vector(std::vector<float>(h.begin(), h.end()), Shape{8}));
    for (size_t i = 0; i < 4; ++i) {  // torch.optim.AdamW: decay first, then the Adam step
      const double gi = grads[static_cast<size_t>(s - 1)][i];
      w[i] *= 1 - 0.05 * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * gi;
      v[i] = 0.99 * v[i] + 0.01 * gi * gi;
      w[i] -= 0.05 * (m[i] / (1 - std::pow(0.9, s))) / (std::sqrt(v[i] / (1 - std::pow(0.99, s))) + 1e-8);
    }
  }
  auto got = p.value.to_float_vector();
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], w[i], 1e-6) << i;
}

TEST(TrainGradClip, ScalesEveryGradientByClipOverGlobalNorm) {
  // Gradients of global norm >> 0.3. Muon and Adam updates are nearly scale-invariant, so the test
  // reads the optimizer states, which hold the scaled gradient directly: Muon's momentum buffer after
  // one step is g', Adam's first moment is (1 - beta1) g'.
  Table tb;
  tb.set_grads(3.f);
  double sq = 0;
  for (auto& p : tb.t.all())
    for (float g : p.grad.to_float_vector()) sq += static_cast<double>(g) * g;
  const double norm = std::sqrt(sq);
  ASSERT_GT(norm, 10.0);
  OptimSection o;
  o.grad_clip_norm = 0.3;
  Optimizer opt(tb.t, o, Device::CPU, DType::F32);
  const auto g_w = tb.t.get("w").grad.to_float_vector(), g_s = tb.t.get("s").grad.to_float_vector();
  opt.step(0, 1.0);
  const double returned = opt.grad_norm();
  EXPECT_NEAR(returned, norm, 1e-4 * norm);
  const double c = 0.3 / (norm + 1e-6);
  auto buf = opt.muon().momentum_buffers()[0].to_float_vector();
  for (size_t i = 0; i < buf.size(); ++i) EXPECT_NEAR(buf[i], g_w[i] * c, 1e-6) << "muon momentum " << i;
  auto m = opt.adam().first_moments()[1].to_float_vector();  // adam params: tok_emb, s
  for (size_t i = 0; i < m.size(); ++i) EXPECT_NEAR(m[i], 0.1 * g_s[i] * c, 1e-7) << "adam m " << i;
}

TEST(TrainGradClip, SmallNormsAndOffLeaveGradientsAlone) {
  for (double clip : {0.0, 1e6}) {
    Table tb;
    tb.set_grads(1.f);
    OptimSection o;
    o.grad_clip_norm = clip;
    Optimizer opt(tb.t, o, Device::CPU, DType::F32);
    const auto g_w = tb.t.get("w").grad.to_float_vector();
    opt.step(0, 1.0);
    const double returned = opt.grad_norm();
    if (clip == 0.0) {
      EXPECT_EQ(returned, -1.0);  // not computed when off
    }
    auto buf = opt.muon().momentum_buffers()[0].to_float_vector();
    for (size_t i = 0; i < buf.size(); ++i) EXPECT_FLOAT_EQ(buf[i], g_w[i]) << "clip " << clip;
  }
}

// The clip scale is computed on the device (ops::clip_grad_scale, so a CUDA graph can replay it); it must be the
// host clip the trainer used before, bit for bit: per-tensor f32 sums of squares added in table order in double,
// scale = f32(min(1, clip / (norm + 1e-6))), g' = g * scale. The reference below is that host computation, applied
// by pre-scaling the gradients of an unclipped twin (its kernels multiply by 1, which is exact). The table puts the
// parameter groups out of order, so the Muon-first layout of the norm parts differs from the table order.
TEST(TrainGradClip, DeviceScaleIsTheHostClipBitForBit) {
  auto make = [] {
    auto t = std::make_unique<model::ParamTable>();
    t->add(model::ParamSpec{"s", Shape{6}, model::OptGroup::AdamScalar, 1.f});
    t->add(model::ParamSpec{"w1", Shape{4, 6}, model::OptGroup::Muon, 1.f});
    t->add(model::ParamSpec{"tok_emb.weight", Shape{8, 6}, model::OptGroup::AdamEmbed, 1.f});
    t->add(model::ParamSpec{"w2", Shape{6, 5}, model::OptGroup::Muon, 1.f});
    t->allocate(Device::CPU, DType::F32);
    uint32_t seed = 1;
    for (auto& p : t->all()) p.value.copy_from(Tensor::from_vector(gaussian(p.value.numel(), seed++), p.value.shape()));
    return t;
  };
  auto clipped_t = make(), ref_t = make();
  OptimSection o = groups_cfg();
  o.muon_momentum_warmup_steps = 3;
  o.grad_clip_norm = 0.3;
  Optimizer clipped(*clipped_t, o, Device::CPU, DType::F32);
  o.grad_clip_norm = 0;
  Optimizer ref(*ref_t, o, Device::CPU, DType::F32);
  Tensor part = Tensor::zeros(Shape{1}, DType::F32);
  int clipped_steps = 0;
  // Gradient scales around the clip: most steps clip, the small ones do not.
  const std::vector<float> grad_scales = {3.f, 0.01f, 0.5f, 0.002f, 8.f};
  for (size_t s = 0; s < grad_scales.size(); ++s) {
    uint32_t seed = 100 + static_cast<uint32_t>(10 * s);
    for (auto* t : {clipped_t.get(), ref_t.get()}) {
      uint32_t k = seed;
      for (auto& p : t->all())
        p.grad.copy_from(Tensor::from_vector(gaussian(p.grad.numel(), k++, grad_scales[s]), p.grad.shape()));
    }
    double sq = 0;
    for (auto& p : ref_t->all()) {
      ops::sum_squares(p.grad, part);
      sq += static_cast<double>(part.to_float_vector()[0]);
    }
    const double norm = std::sqrt(sq);
    const auto scale = static_cast<float>(std::min(1.0, 0.3 / (norm + 1e-6)));
    clipped_steps += scale < 1.f ? 1 : 0;
    for (auto& p : ref_t->all()) {
      auto g = p.grad.to_float_vector();
      for (float& x : g) x *= scale;
      p.grad.copy_from(Tensor::from_vector(g, p.grad.shape()));
    }
    clipped.step(static_cast<int64_t>(s), 0.7);
    ref.step(static_cast<int64_t>(s), 0.7);
    EXPECT_EQ(clipped.grad_norm(), static_cast<double>(static_cast<float>(norm))) << "step " << s;
    for (size_t i = 0; i < ref_t->all().size(); ++i)
      EXPECT_EQ(clipped_t->all()[i].value.to_float_vector(), ref_t->all()[i].value.to_float_vector())
          << ref_t->all()[i].spec.name << " after step " << s;
  }
  EXPECT_EQ(clipped_steps, 3) << "the scales must include clipped and unclipped steps";
}
