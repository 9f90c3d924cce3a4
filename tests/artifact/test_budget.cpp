#include <gtest/gtest.h>

#include <random>

#include "artifact/budget.h"
#include "artifact/reader.h"
#include "core/error.h"

using namespace pgolf;
using namespace pgolf::artifact;

namespace {
std::vector<float> gaussian(size_t n, float sd, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

SolverOptions fast_solver() {
  SolverOptions o;
  o.compressors = {Compressor::Zlib9};
  o.shuffle_strides = {1};
  o.threads = 1;
  return o;
}
}  // namespace

TEST(Budget, PrunesJustEnoughToFit) {
  Artifact a;
  a.config_json = "{}";
  std::map<std::string, std::vector<float>> originals;
  for (int i = 0; i < 3; ++i) {
    auto w = gaussian(48 * 64, 0.02f * (i + 1), static_cast<uint32_t>(i + 1));
    a.tensors.push_back(
        StoredTensor::make_int_row(fmt::format("m{}", i), {48, 64}, quant::quantize_rtn(w, 48, 64, 5, quant::ClipRule::sd(2.5))));
    originals[a.tensors.back().name] = w;
  }
  // LQER lands on the tensor with the largest error (the widest distribution here).
  const auto fixed = add_lqer_to_worst(a, originals, 1, 2, 64);
  ASSERT_EQ(fixed.size(), 1u);
  EXPECT_EQ(fixed[0], "m2");
  EXPECT_TRUE(a.get("m2").lqer.has_value());
  EXPECT_FALSE(a.get("m0").lqer.has_value());

  const uint64_t full = serialize_artifact(a, fast_solver()).size();
  Artifact fits = a;
  BudgetResult r0 = fit_to_budget(fits, fast_solver(), full);
  EXPECT_TRUE(r0.reached);
  EXPECT_EQ(r0.prune.pruned, 0u);

  const uint64_t target = full - full / 50;
  BudgetResult r = fit_to_budget(a, fast_solver(), target);
  ASSERT_TRUE(r.reached);
  EXPECT_GT(r.prune.pruned, 0u);
  EXPECT_LE(r.bytes.size(), target);
  const Artifact back = parse_artifact(r.bytes, "budget");
  EXPECT_EQ(back.get("m1").q.codes, a.get("m1").q.codes);  // the pruned codes are what was written

  Artifact hopeless = fits;
  BudgetResult bad = fit_to_budget(hopeless, fast_solver(), 100);
  EXPECT_FALSE(bad.reached);
  EXPECT_EQ(hopeless.get("m0").q.codes, fits.get("m0").q.codes);  // restored when unreachable
}
