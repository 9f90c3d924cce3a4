// The baseline GPT on CPU: parameter table, init, whole-model gradients against finite
// differences, the memory plan, and forward-only vs training losses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

TEST(GptParams, BaselineCountsNamesAndGroups) {
  GPT m(ModelConfig{}, Device::CPU);  // the 9-layer, 512-wide baseline
  EXPECT_EQ(m.params().count_elements(), 17059912);  // TECHNIQUES.md §4.1 (matches the reference log)
  const ParamTable& t = m.params();
  EXPECT_EQ(t.get("tok_emb.weight").spec.shape, (Shape{1024, 512}));
  EXPECT_EQ(t.get("skip_weights").spec.shape, (Shape{4, 512}));
  EXPECT_EQ(t.get("blocks.8.attn.c_k.weight").spec.shape, (Shape{256, 512}));
  EXPECT_EQ(t.get("blocks.8.mlp.fc.weight").spec.shape, (Shape{1024, 512}));
  EXPECT_EQ(t.get("blocks.8.mlp.proj.weight").spec.shape, (Shape{512, 1024}));
  EXPECT_EQ(t.get("blocks.3.resid_mix").spec.shape, (Shape{2, 512}));
  EXPECT_EQ(t.get("blocks.3.attn.q_gain").spec.shape, (Shape{8}));
  EXPECT_EQ(t.find("blocks.9.attn_scale"), nullptr);
  int muon = 0;
  for (const Param& p : t.all()) {
    if (p.spec.group == OptGroup::Muon) {
      ++muon;
      EXPECT_EQ(p.spec.shape.nd, 2) << p.spec.name;
      EXPECT_NE(p.spec.quant, QuantRole::Passthrough) << p.spec.name;
    }
  }
  EXPECT_EQ(muon, 9 * 6);
  EXPECT_EQ(t.get("tok_emb.weight").spec.group, OptGroup::AdamEmbed);
  EXPECT_EQ(t.get("skip_weights").spec.group, OptGroup::AdamScalar);
  EXPECT_EQ(t.get("blocks.0.attn.q_gain").spec.group, OptGroup::AdamScalar);
  EXPECT_EQ(t.get("blocks.0.attn.proj.weight").spec.quant, QuantRole::AttnO);
  EXPECT_EQ(t.get("blocks.0.mlp.proj.weight").spec.quant, QuantRole::MlpDown);
}

TEST(GptParams, ConfigErrorsAreClear) {
  ModelConfig c = tiny_config();
  c.num_kv_heads = 3;
  try {
    GPT m(c, Device::CPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_kv_heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ParamTable().get("nope"), Error);
  ParamTable t;
  t.add(ParamSpec{"a", Shape{2}});
  EXPECT_THROW(t.add(ParamSpec{"a", Shape{2}}), Error);
}

TEST(GptInit, FollowsTheBaselineRecipe) {
  GPT m(tiny_config(), Device::CPU);
  m.init(7);
  auto vals = [&](const char* n) { return m.params().get(n).value.to_float_vector(); };
  auto cq = vals("blocks.1.attn.c_q.weight");
  const float bound = 1.f / std::sqrt(32.f);
  float mx = 0;
  for (float v : cq) mx = std::max(mx, std::fabs(v));
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.8f * bound);  // actually spread over the range
  for (float v : vals("blocks.1.attn.proj.weight")) ASSERT_EQ(v, 0.f);
  for (float v : vals("blocks.1.mlp.proj.weight")) ASSERT_EQ(v, 0.f);
  for (float v : vals("blocks.1.attn.q_gain")) ASSERT_EQ(v, 1.5f);
  for (float v : vals("skip_weights")) ASSERT_EQ(v, 1.f);
  auto mix = vals("blocks.2.resid_mix");
  for (size_t i = 0; i < mix.size(); ++i) ASSERT_EQ(mix[i], i < 32 ? 1.f : 0.f) << i;
  auto emb = vals("tok_emb.weight");
  double ss = 0;
  for (float v : emb) ss += double(v) * v;
  EXPECT_NEAR(std::sqrt(ss / emb.size()), 0.005, 0.0005);

  GPT same(tiny_config(), Device::CPU), other(tiny_config(), Device::CPU);
  same.init(7);
  other.init(8);
  EXPECT_EQ(same.params().get("blocks.1.attn.c_q.weight").value.to_float_vector(), cq);
  EXPECT_NE(other.params().get("blocks.1.attn.c_q.weight").value.to_float_vector(), cq);
}

TEST(GptInit, OrthogonalInitIsOrthogonal) {
  ParamTable t;
  t.add(ParamSpec{"wide", Shape{3, 5}, OptGroup::Muon, 1.f, QuantRole::AttnQ, InitKind::Orthogonal});
  t.add(ParamSpec{"tall", Shape{6, 4}, OptGroup::Muon, 1.f, QuantRole::AttnQ, InitKind::Orthogonal});
  t.allocate(Device::CPU, DType::F32);
  t.init(3);
  for (const char* name : {"wide", "tall"}) {
    const Tensor& w = t.get(name).value;
    auto v = w.to_float_vector();
    const int64_t r = w.dim(0), c = w.dim(1);
    // The short side's Gram matrix is the identity.
    const bool rows_orthonormal = r <= c;
    const int64_t k = rows_orthonormal ? r : c, len = rows_orthonormal ? c : r;
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) {
        double dot = 0;
        for (int64_t i = 0; i < len; ++i)
          dot += rows_orthonormal ? double(v[a * c + i]) * v[b * c + i] : double(v[i * c + a]) * v[i * c + b];
        EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << name << " " << a << "," << b;
      }
  }
}

struct Batch {
  Tensor ids, targets;
};

Batch tiny_batch(int64_t B, int64_t T, uint64_t seed) {
  return {random_ids(B, T, tiny_config().vocab_size, seed), random_ids(B, T, tiny_config().vocab_size, seed + 1)};
}

double mean_loss(GPT& m, const Batch& b, Arena& arena) {
  Tensor losses = Tensor::zeros(Shape{b.ids.numel()}, DType::F32);
  m.forward_losses(b.ids, b.targets, arena, losses);
  double s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s / static_cast<double>(b.ids.numel());
}

TEST(GptGrad, WholeModelMatchesFiniteDifferences) {
  GPT m(tiny_config(), Device::CPU);
  randomize(m, 11);
  const Batch b = tiny_batch(2, 8, 5);
  const int64_t N = b.ids.numel();
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(b.ids, b.targets, 1.f / static_cast<float>(N), arena, loss_sum);

  int checked = 0, failures = 0;
  for (Param& p : m.params().all()) {
    const auto grad = p.grad.to_float_vector();
    float* w = p.value.ptr<float>();
    // The two entries with the largest gradients plus one arbitrary entry of every parameter.
    std::vector<size_t> order(grad.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + 2, order.end(),
                      [&](size_t a, size_t c) { return std::fabs(grad[a]) > std::fabs(grad[c]); });
    for (size_t i : {order[0], order[1], grad.size() / 3}) {
      const float h = 1e-2f, saved = w[i];
      w[i] = saved + h;
      const double up = mean_loss(m, b, arena);
      w[i] = saved - h;
      const double down = mean_loss(m, b, arena);
      w[i] = saved;
      const double fd = (up - down) / (2.0 * h), an = grad[i];
      ++checked;
      if (std::fabs(fd - an) > 3e-2 * std::fabs(an) + 3e-4) {
        ++failures;
        ADD_FAILURE() << p.spec.name << "[" << i << "]: analytic " << an << " vs finite difference " << fd;
      }
    }
  }
  EXPECT_EQ(failures, 0) << "of " << checked;
  EXPECT_GT(checked, 60);
}

TEST(GptGrad, GradientsAccumulateAndLossesAgree) {
  GPT m(tiny_config(), Device::CPU);
  randomize(m, 3);
  const Batch b = tiny_batch(2, 8, 9);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(b.ids, b.targets, 0.5f, arena, loss_sum);
  const float once = loss_sum.to_float_vector()[0];
  std::vector<std::vector<float>> g1;
  for (const Param& p : m.params().all()) g1.push_back(p.grad.to_float_vector());
  EXPECT_EQ(arena.used(), 0u) << "forward_backward must reset the arena";

  m.forward_backward(b.ids, b.targets, 0.5f, arena, loss_sum);
  EXPECT_FLOAT_EQ(loss_sum.to_float_vector()[0], 2 * once);  // loss_sum accumulates
  size_t k = 0;
  for (const Param& p : m.params().all()) {
    auto g2 = p.grad.to_float_vector();
    for (size_t i = 0; i < g2.size(); ++i)
      ASSERT_NEAR(g2[i], 2 * g1[k][i], 1e-6f + 1e-5f * std::fabs(g1[k][i])) << p.spec.name << "[" << i << "]";
    ++k;
  }
  // Every parameter receives a gradient (all paths are live with random weights).
  k = 0;
  for (const Param& p : m.params().all()) {
    double s = 0;
    for (float v : g1[k++]) s += std::fabs(v);
    EXPECT_GT(s, 0) << p.spec.name;
  }
  // Forward-only per-token losses sum to the training loss.
  EXPECT_NEAR(mean_loss(m, b, arena) * b.ids.numel(), once, 1e-5 * std::fabs(once));
}

TEST(GptPlan, PlanIsExactAndSufficient) {
  GPT m(tiny_config(), Device::CPU);
  randomize(m, 1);
  const Batch b = tiny_batch(3, 8, 2);
  const size_t plan = m.plan_bytes(3, 8);
  const size_t eval_plan = m.plan_bytes(3, 8, /*with_backward=*/false);
  EXPECT_GE(plan, eval_plan) << "a training arena also serves forward-only passes";
  EXPECT_GT(m.plan_bytes(3, 16), plan);
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  Arena arena(Device::CPU);
  arena.reserve(plan);
  m.forward_backward(b.ids, b.targets, 1.f, arena, loss_sum);
  EXPECT_EQ(plan, std::max(arena.peak(), eval_plan)) << "the plan is exact: the larger of the two passes";

  Arena eval_arena(Device::CPU);
  eval_arena.reserve(eval_plan);
  Tensor losses = Tensor::zeros(Shape{b.ids.numel()}, DType::F32);
  m.forward_losses(b.ids, b.targets, eval_arena, losses);
  EXPECT_EQ(eval_arena.peak(), eval_plan);

  Arena small(Device::CPU);
  small.reserve(arena.peak() - 1);  // one byte short of the training step's own peak
  EXPECT_THROW(m.forward_backward(b.ids, b.targets, 1.f, small, loss_sum), Error);
  EXPECT_EQ(small.used(), 0u) << "the arena is reset even when the step fails";
}

// forward_losses_tail (sliding-window scoring): the last `tail` positions' losses equal the full forward's, and
// the pass needs no more arena than forward_losses.
TEST(GptForward, TailLossesMatchTheFullForward) {
  GPT m(tiny_config(), Device::CPU);
  randomize(m, 6);
  const int64_t B = 3, T = 16, tail = 5;
  const Tensor ids = random_ids(B, T, tiny_config().vocab_size, 8);
  const Tensor targets = random_ids(B, T, tiny_config().vocab_size, 9);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(B, T, false));
  Tensor full = Tensor::zeros(Shape{B * T}, DType::F32);
  m.forward_losses(ids, targets, arena, full);
  std::vector<int32_t> tt;
  const auto tv = targets.to_int_vector();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = T - tail; i < T; ++i) tt.push_back(tv[static_cast<size_t>(b * T + i)]);
  Tensor tail_targets = Tensor::from_blob(tt.data(), Shape{B, tail}, DType::I32, Device::CPU);
  Tensor part = Tensor::zeros(Shape{B * tail}, DType::F32);
  m.forward_losses_tail(ids, tail_targets, tail, arena, part);
  EXPECT_LE(arena.peak(), m.plan_bytes(B, T, false));
  const auto f = full.to_float_vector(), p = part.to_float_vector();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < tail; ++i)
      EXPECT_NEAR(p[static_cast<size_t>(b * tail + i)], f[static_cast<size_t>(b * T + T - tail + i)], 1e-5) << b << "," << i;
  Tensor again = Tensor::zeros(Shape{B * T}, DType::F32);  // the tail setting does not leak into later passes
  m.forward_losses(ids, targets, arena, again);
  EXPECT_EQ(again.to_float_vector(), f);
  EXPECT_THROW(m.forward_losses_tail(ids, tail_targets, T + 1, arena, part), Error);
  EXPECT_THROW(m.forward_losses_tail(ids, tail_targets, 4, arena, part), Error);  // targets are (B, 5)
}

TEST(GptForward, LogitsAreCappedByTheLoss) {
  // forward_logits gives the raw z; the per-token loss is CE of 30 tanh(z / 30).
  GPT m(tiny_config(), Device::CPU);
  randomize(m, 4);
  const Batch b = tiny_batch(1, 8, 3);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(1, 8));
  Tensor z = Tensor::zeros(Shape{8, 32}, DType::F32);
  m.forward_logits(b.ids, arena, z);
  Tensor losses = Tensor::zeros(Shape{8}, DType::F32);
  m.forward_losses(b.ids, b.targets, arena, losses);
  auto zv = z.to_float_vector();
  auto lv = losses.to_float_vector();
  auto tv = b.targets.to_int_vector();
  for (int n = 0; n < 8; ++n) {
    double mx = -1e30, s = 0;
    std::vector<double> c(32);
    for (int v = 0; v < 32; ++v) mx = std::max(mx, c[v] = 30.0 * std::tanh(zv[n * 32 + v] / 30.0));
    for (int v = 0; v < 32; ++v) s += std::exp(c[v] - mx);
    EXPECT_NEAR(lv[n], std::log(s) + mx - c[tv[n]], 1e-4) << n;
  }
}

}  // namespace
}  // namespace pgolf::model
