#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "artifact/compress.h"
#include "core/error.h"
#include "quant/lqer.h"
#include "quant/prune.h"

using namespace pgolf;
using namespace pgolf::quant;

namespace {
std::vector<float> gaussian(size_t n, float sd, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace

TEST(Lqer, LowRankErrorIsMostlyRecovered) {
  // Error = a rank-2 structure + small noise: the INT2/INT4 rank-2 correction must remove most of it.
  const int64_t rows = 40, cols = 96;
  auto u = gaussian(rows * 2, 1.f, 1), v = gaussian(2 * cols, 1.f, 2), noise = gaussian(rows * cols, 0.01f, 3);
  std::vector<float> err(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      err[static_cast<size_t>(i * cols + j)] =
          0.1f * (u[i * 2] * v[j] + 0.5f * u[i * 2 + 1] * v[cols + j]) + noise[static_cast<size_t>(i * cols + j)];
  LowRankCorrection c = lqer_fit(err, rows, cols, 2, 64);
  c.validate("t");
  EXPECT_EQ(c.b_scales.size(), 3u);  // 2·96 / 64
  std::vector<float> residual(err.size());
  for (size_t i = 0; i < err.size(); ++i) residual[i] = -err[i];
  c.add_to(residual);  // residual = A·B − err
  double before = 0, after = 0;
  for (size_t i = 0; i < err.size(); ++i) {
    before += double(err[i]) * err[i];
    after += double(residual[i]) * residual[i];
  }
  EXPECT_LT(after, 0.6 * before);  // INT2 A is coarse; it still removes well over a third of the energy
  for (int8_t a : c.a_codes) EXPECT_TRUE(a >= -2 && a <= 1);
  EXPECT_THROW(lqer_fit(err, rows, cols, 0), Error);
  EXPECT_THROW(lqer_fit(err, rows, cols + 1, 2), Error);
}

TEST(Lqer, PickWorstIsStableTopK) {
  std::vector<double> norms{1.0, 5.0, 3.0, 5.0, 0.5};
  EXPECT_EQ(lqer_pick_worst(norms, 3), (std::vector<size_t>{1, 3, 2}));
  EXPECT_EQ(lqer_pick_worst(norms, 10).size(), 5u);
}

TEST(Prune, CandidatesAreCheapestFirstAndUndoable) {
  QuantizedMatrix a = quantize_rtn(gaussian(64, 1.f, 7), 4, 16, 5, ClipRule::row_max());
  QuantizedMatrix b = quantize_rtn(gaussian(64, 10.f, 8), 4, 16, 5, ClipRule::row_max());
  std::vector<QuantizedMatrix*> ms{&a, &b};
  auto cands = prune_candidates(ms);
  ASSERT_FALSE(cands.empty());
  for (size_t i = 1; i < cands.size(); ++i) EXPECT_LE(cands[i - 1].cost, cands[i].cost);
  const auto orig_a = a.codes, orig_b = b.codes;
  apply_prune(ms, cands, cands.size());
  for (const auto& c : cands) EXPECT_EQ(ms[c.matrix]->codes[c.index], 0);
  apply_prune(ms, cands, 0);
  EXPECT_EQ(a.codes, orig_a);
  EXPECT_EQ(b.codes, orig_b);
}

TEST(Prune, BinarySearchLandsOnTheBudgetWithTheFewestPrunes) {
  const int64_t rows = 32, cols = 64;
  QuantizedMatrix q = quantize_rtn(gaussian(rows * cols, 1.f, 9), rows, cols, 5, ClipRule::sd(2.5));
  std::vector<QuantizedMatrix*> ms{&q};
  auto size_fn = [&] {
    auto b = std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(q.codes.data()),
                                  reinterpret_cast<const uint8_t*>(q.codes.data()) + q.codes.size());
    return static_cast<uint64_t>(artifact::compress(artifact::Compressor::Zlib9, b).size());
  };
  const uint64_t unpruned = size_fn();
  // Already within budget: nothing pruned.
  PruneResult r0 = prune_to_budget(ms, size_fn, unpruned);
  EXPECT_TRUE(r0.reached);
  EXPECT_EQ(r0.pruned, 0u);
  const uint64_t target = unpruned - unpruned / 40;
  const auto cands = prune_candidates(ms);  // on the unpruned matrix, same order prune_to_budget uses
  PruneResult r = prune_to_budget(ms, size_fn, target);
  ASSERT_TRUE(r.reached);
  EXPECT_GT(r.pruned, 0u);
  EXPECT_LE(size_fn(), target);
  EXPECT_EQ(size_fn(), r.bytes);
  // The fewest prunes: one fewer misses the budget.
  apply_prune(ms, cands, r.pruned - 1);
  EXPECT_GT(size_fn(), target);
  apply_prune(ms, cands, r.pruned);
  // Binary search: about log2(candidates) + 2 size evaluations, not one per candidate.
  EXPECT_LE(r.evaluations, 2 + static_cast<int>(std::ceil(std::log2(static_cast<double>(r.candidates)))) + 1);
  // Unreachable target: matrices restored, reached = false.
  QuantizedMatrix fresh = quantize_rtn(gaussian(rows * cols, 1.f, 9), rows, cols, 5, ClipRule::sd(2.5));
  q = fresh;
  PruneResult bad = prune_to_budget(ms, size_fn, 10);
  EXPECT_FALSE(bad.reached);
  EXPECT_EQ(q.codes, fresh.codes);
}
