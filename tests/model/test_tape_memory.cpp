// The tape's memory plan: freeing dead activations and gradients must not change a single bit of
// the gradients, must repeat the same addresses every step (and in the measuring run), and must
// lower the peak substantially.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <span>

#include "model/tape.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;

// Sets Tape::free_dead_default for the scope of a test.
struct FreeDead {
  bool saved;
  explicit FreeDead(bool on) : saved(Tape::free_dead_default()) { Tape::free_dead_default() = on; }
  ~FreeDead() { Tape::free_dead_default() = saved; }
};

ModelConfig deep_config() {
  ModelConfig c = testing::tiny_config();
  c.num_layers = 6;
  return c;
}

struct StepResult {
  std::vector<std::vector<float>> grads;
  float loss = 0;
  size_t plan = 0, forward_plan = 0, peak = 0;
};

StepResult step(bool free_dead, int64_t B, int64_t T) {
  FreeDead mode(free_dead);
  GPT m(deep_config(), Device::CPU);
  randomize(m, 7);
  m.params().zero_grads();
  const Tensor ids = random_ids(B, T, m.config().vocab_size, 11), targets = random_ids(B, T, m.config().vocab_size, 12);
  StepResult r;
  r.plan = m.plan_bytes(B, T);
  r.forward_plan = m.plan_bytes(B, T, /*with_backward=*/false);
  Arena arena(Device::CPU);
  arena.reserve(r.plan);
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(ids, targets, 1.f / static_cast<float>(B * T), arena, loss_sum);
  r.peak = arena.peak();
  r.loss = loss_sum.to_float_vector()[0];
  for (const Param& p : m.params().all()) r.grads.push_back(p.grad.to_float_vector());
  return r;
}

TEST(TapeMemory, FreeingChangesNoGradientBitAndLowersThePeak) {
  const StepResult keep = step(false, 2, 16), freed = step(true, 2, 16);
  // The plan is the larger of the step's peak and a forward-only pass's; the measuring run sees the
  // exact peak of the real step.
  EXPECT_EQ(keep.plan, std::max(keep.peak, keep.forward_plan));
  EXPECT_EQ(freed.plan, std::max(freed.peak, freed.forward_plan));
  ASSERT_EQ(keep.loss, freed.loss);
  ASSERT_EQ(keep.grads.size(), freed.grads.size());
  double norm = 0;
  for (size_t i = 0; i < keep.grads.size(); ++i) {
    ASSERT_EQ(keep.grads[i].size(), freed.grads[i].size());
    for (size_t j = 0; j < keep.grads[i].size(); ++j) {
      ASSERT_EQ(keep.grads[i][j], freed.grads[i][j]) << "param " << i << "[" << j << "]";
      norm += std::fabs(keep.grads[i][j]);
    }
  }
  EXPECT_GT(norm, 0);
  const double ratio = static_cast<double>(freed.plan) / static_cast<double>(keep.plan);
  std::printf("[tape memory] 6-layer tiny model, B=2 T=16: peak %zu -> %zu bytes (ratio %.3f)\n", keep.plan,
              freed.plan, ratio);
  EXPECT_LT(ratio, 0.65);
}

TEST(TapeMemory, EveryStepAndThePlanUseTheSameAddresses) {
  GPT m(deep_config(), Device::CPU);
  randomize(m, 5);
  const int64_t B = 2, T = 8;
  const Tensor ids = random_ids(B, T, m.config().vocab_size, 1), targets = random_ids(B, T, m.config().vocab_size, 2);
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);

  std::vector<Arena::Event> planned, first, second;
  Arena probe(Device::CPU);
  probe.begin_measure();
  probe.trace(&planned);
  const Tensor none_ids = Tensor::from_blob(nullptr, Shape{B, T}, DType::I32, Device::CPU);
  m.forward_backward(none_ids, none_ids, 1.f, probe, Tensor::from_blob(nullptr, Shape{1}, DType::F32, Device::CPU));
  const size_t plan = probe.end_measure();

  Arena arena(Device::CPU);
  arena.reserve(plan);
  arena.trace(&first);
  m.forward_backward(ids, targets, 1.f, arena, loss_sum);
  arena.trace(&second);
  m.forward_backward(ids, targets, 1.f, arena, loss_sum);
  arena.trace(nullptr);
  EXPECT_EQ(arena.used(), 0u);
  EXPECT_EQ(arena.peak(), plan);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first, second);
  EXPECT_EQ(first, planned);
  size_t frees = 0;
  for (const Arena::Event& e : first) frees += e.alloc ? 0 : 1;
  EXPECT_GT(frees, first.size() / 3) << "most tape buffers are freed during the step";
}

// The baseline shape (TECHNIQUES.md §4.1: 9 layers, d 512, MLP 1024, vocab 1024) at 64 x 1024
// tokens per micro-step in bf16, planned on the CPU in measuring mode (nothing is allocated).
TEST(TapeMemory, BaselinePlanShrinks) {
  ModelConfig c;
  c.act_dtype = DType::BF16;
  GPT m(c, Device::CPU);
  size_t before = 0, after = 0;
  {
    FreeDead off(false);
    before = m.plan_bytes(64, 1024);
  }
  after = m.plan_bytes(64, 1024);
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::printf("[tape memory] baseline plan_bytes(64, 1024) bf16: %.2f GiB -> %.2f GiB (ratio %.3f)\n", before / gib,
              after / gib, static_cast<double>(after) / static_cast<double>(before));
  EXPECT_LT(static_cast<double>(after), 0.65 * static_cast<double>(before));
}

// keep() keeps a value intact through backward; release() frees at once and later reads fail.
TEST(TapeMemory, KeepAndRelease) {
  ParamTable t;
  t.add(ParamSpec{"emb", Shape{5, 8}});
  t.add(ParamSpec{"w", Shape{8, 8}});
  t.allocate(Device::CPU, DType::F32);
  for (Param& p : t.all()) ops::fill_normal(p.value, 3, p.spec.name == "w" ? 1u << 20 : 0u, 0.f, 0.5f);
  const Tensor ids = random_ids(1, 6, 5, 1).view(Shape{6});
  Arena arena(Device::CPU);
  arena.reserve(1 << 20);
  Tape tp(arena, DType::F32, 1e-6f, true);
  Var e = tp.embedding(ids, t.get("emb"));
  Var n = tp.rmsnorm(e);
  Var r = tp.rope(tp.view(n, Shape{1, 6, 2, 4}), 4, 10000.f);  // rope's backward reads no value
  const size_t top = arena.used();
  tp.release(e);  // no closure reads the embedding (the norm differentiates through its output): freed at once
  EXPECT_GT(arena.hole_bytes(), 0u);
  EXPECT_EQ(arena.used(), top) << "a hole below the top, the top stays";
  EXPECT_THROW(tp.rmsnorm(e), Error);
  tp.release(n);  // the norm's closure reads its output n: stays until backward
  Var h = tp.linear(tp.view(r, Shape{6, 8}), t.get("w"));
  tp.keep(h);
  const std::vector<float> h_before = h.t.to_float_vector();
  Var logits = tp.linear(h, t.get("emb"));
  const Tensor targets = random_ids(1, 6, 5, 2).view(Shape{6});
  Tensor losses = arena.alloc(Shape{6}, DType::F32);
  tp.softcap_cross_entropy(logits, targets, 30.f, losses, 1.f);
  tp.backward();
  // Fill every hole with garbage: a kept value must not lie in one.
  while (arena.hole_bytes() > 0) {
    Tensor junk = arena.alloc(Shape{static_cast<int64_t>(Arena::kAlign / 4)}, DType::F32);
    for (float& v : std::span<float>(junk.ptr<float>(), Arena::kAlign / 4)) v = 1e30f;
  }
  EXPECT_EQ(h.t.to_float_vector(), h_before);
}

}  // namespace
}  // namespace pgolf::model
