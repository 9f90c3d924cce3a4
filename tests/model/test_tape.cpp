// The tape: a parameter used twice accumulates exactly the sum of the gradients two separate
// copies would get; a value consumed by several ops sums its gradient contributions.
#include <gtest/gtest.h>

#include "model/tape.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

constexpr int64_t kN = 6, kC = 8, kV = 5;

ParamTable make_table(bool shared) {
  ParamTable t;
  t.add(ParamSpec{"emb", Shape{kV, kC}});
  t.add(ParamSpec{"w1", Shape{kC, kC}});
  if (!shared) t.add(ParamSpec{"w2", Shape{kC, kC}});
  t.add(ParamSpec{"s", Shape{2, kC}});
  t.add(ParamSpec{"out", Shape{kV, kC}});
  t.allocate(Device::CPU, DType::F32);
  for (Param& p : t.all()) {
    const std::string& n = p.spec.name;
    // w2 gets w1's values so the two graphs compute the same function.
    const uint64_t key = n == "w2" ? 1 : n == "emb" ? 0 : n == "w1" ? 1 : n == "s" ? 2 : 3;
    ops::fill_normal(p.value, 99, key << 20, 0.f, 0.5f);
  }
  return t;
}

// e = E[ids]; h = W1 e; h2 = W2 h; out = h2 + s0 * e; m = s0 * out + s1 * out; loss = CE(m Wout^T).
float run(ParamTable& t, bool shared, Arena& arena) {
  Tensor ids = testing::random_ids(1, kN, kV, 5).view(Shape{kN});
  Tensor targets = testing::random_ids(1, kN, kV, 6).view(Shape{kN});
  Tape tp(arena, DType::F32, 1e-6f, true);
  Var e = tp.embedding(ids, t.get("emb"));
  Var h = tp.linear(e, t.get("w1"));
  Var h2 = tp.linear(h, t.get(shared ? "w1" : "w2"));
  Var out = tp.add_mul_channel(h2, chan_row(t.get("s"), 0), e);
  Var mixed = tp.mix_channel(chan_row(t.get("s"), 0), out, chan_row(t.get("s"), 1), out);
  Var logits = tp.linear(mixed, t.get("out"));
  Tensor losses = arena.alloc(Shape{kN}, DType::F32);
  tp.softcap_cross_entropy(logits, targets, 0.f, losses, 1.f);
  tp.backward();
  float s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s;
}

TEST(Tape, SharedParameterAccumulatesBothUses) {
  ParamTable shared = make_table(true), split = make_table(false);
  Arena a1(Device::CPU), a2(Device::CPU);
  a1.reserve(1 << 20);
  a2.reserve(1 << 20);
  const float l1 = run(shared, true, a1), l2 = run(split, false, a2);
  ASSERT_EQ(l1, l2);
  auto g_shared = shared.get("w1").grad.to_float_vector();
  auto g1 = split.get("w1").grad.to_float_vector(), g2 = split.get("w2").grad.to_float_vector();
  double norm = 0;
  for (size_t i = 0; i < g_shared.size(); ++i) {
    EXPECT_NEAR(g_shared[i], g1[i] + g2[i], 1e-5f) << i;
    norm += std::fabs(g1[i]) + std::fabs(g2[i]);
  }
  EXPECT_GT(norm, 1e-3);
  for (const char* n : {"emb", "s", "out"}) {
    auto a = shared.get(n).grad.to_float_vector(), b = split.get(n).grad.to_float_vector();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f) << n << "[" << i << "]";
  }
}

TEST(Tape, MatchesFiniteDifferencesOnReusedValues) {
  ParamTable t = make_table(true);
  Arena arena(Device::CPU);
  arena.reserve(1 << 20);
  run(t, true, arena);
  for (const char* n : {"emb", "s", "w1"}) {
    Param& p = t.get(n);
    auto g = p.grad.to_float_vector();
    float* w = p.value.ptr<float>();
    for (size_t i = 0; i < g.size(); i += 7) {
      ParamTable probe = make_table(true);
      float* pw = probe.get(n).value.ptr<float>();
      const float h = 1e-2f;
      Arena a(Device::CPU);
      a.reserve(1 << 20);
      pw[i] = w[i] + h;
      const double up = run(probe, true, a);
      a.reset();
      pw[i] = w[i] - h;
      const double down = run(probe, true, a);
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR(g[i], fd, 2e-2 * std::fabs(fd) + 2e-3) << n << "[" << i << "]";
    }
  }
}

TEST(Tape, MeasuringModeComputesNothingAndMatchesTheRealPeak) {
  ParamTable t = make_table(true);
  Arena probe(Device::CPU);
  probe.begin_measure();
  {
    Tensor ids = Tensor::from_blob(nullptr, Shape{kN}, DType::I32, Device::CPU);
    Tape tp(probe, DType::F32, 1e-6f, true);
    Var e = tp.embedding(ids, t.get("emb"));
    Var logits = tp.linear(tp.rmsnorm(e), t.get("out"));
    tp.softcap_cross_entropy(logits, ids, 30.f, probe.alloc(Shape{kN}, DType::F32), 1.f);
    tp.backward();
  }
  const size_t planned = probe.end_measure();
  for (const Param& p : t.all())
    for (float v : p.grad.to_float_vector()) ASSERT_EQ(v, 0.f) << p.spec.name;  // nothing ran
  Arena real(Device::CPU);
  real.reserve(planned);
  Tensor ids = testing::random_ids(1, kN, kV, 5).view(Shape{kN});
  Tape tp(real, DType::F32, 1e-6f, true);
  Var e = tp.embedding(ids, t.get("emb"));
  Var logits = tp.linear(tp.rmsnorm(e), t.get("out"));
  tp.softcap_cross_entropy(logits, ids, 30.f, real.alloc(Shape{kN}, DType::F32), 1.f);
  tp.backward();
  EXPECT_EQ(real.peak(), planned);
}

}  // namespace
}  // namespace pgolf::model
