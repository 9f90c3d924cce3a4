// Phased global TTT (TECHNIQUES.md §8.4): phase ends at document-count boundaries, SGD on the whole
// scored prefix at each end, scores before the first end untouched, later ones changed (and better on
// repetitive text), the model restored afterwards; combines with chunk TTT.
#include <gtest/gtest.h>

#include <vector>

#include "eval/scorer.h"
#include "eval_test_util.h"

namespace pgolf::eval {
namespace {

using testing::kBos;
using testing::synthetic_luts;
using testing::tiny_model;

// Documents of 40 tokens (BOS at 0, 40, 80, ...) repeating one period-13 phrase.
std::vector<uint16_t> repetitive_docs(size_t n) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = i % 40 == 0 ? kBos : static_cast<uint16_t>(2 + (i * 7) % 13);
  return t;
}

PhasedTttOptions phased(int64_t docs, int phases) {
  PhasedTttOptions p;
  p.enabled = true;
  p.prefix_docs = docs;
  p.phases = phases;
  p.lr = 0.05f;
  p.epochs = 2;
  p.chunk_tokens = 64;
  p.batch_seqs = 4;
  return p;
}

TEST(EvalPhasedTtt, BoundariesFollowDocumentCounts) {
  const auto t = repetitive_docs(321);
  // 6 documents over 3 phases: after documents 0-1, 0-3, 0-5, i.e. through the BOS at 80, 160, 240.
  EXPECT_EQ(phase_boundaries(phased(6, 3), t.data(), 321, kBos), (std::vector<int64_t>{81, 161, 241}));
  EXPECT_EQ(phase_boundaries(phased(5, 2), t.data(), 321, kBos), (std::vector<int64_t>{81, 201}));
  // Boundaries at or past the stream end are dropped (8 documents start before 321).
  EXPECT_EQ(phase_boundaries(phased(100, 2), t.data(), 321, kBos), (std::vector<int64_t>{}));
  EXPECT_THROW(phase_boundaries(phased(2, 3), t.data(), 321, kBos), Error);
}

EvalOptions opts(Mode mode) {
  EvalOptions o;
  o.mode = mode;
  o.context = 16;
  o.stride = 4;
  o.batch_tokens = 64;
  o.keep_token_nll = true;
  return o;
}

TEST(EvalPhasedTtt, ScoresBeforeThePhaseEndAreUntouchedAndLaterOnesImprove) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = repetitive_docs(321);
  const auto before = m.params().get("blocks.0.attn.c_q.weight").value.to_float_vector();
  for (Mode mode : {Mode::Sliding, Mode::Doc}) {
    const auto base = evaluate(m, toks, luts, opts(mode));
    auto o = opts(mode);
    o.phased = phased(4, 2);  // phase ends after documents 0-1 (target 81) and 0-3 (target 161)
    const auto r = evaluate(m, toks, luts, o);
    EXPECT_EQ(r.phase_ends.size(), 2u) << mode_name(mode);
    ASSERT_GE(r.phase_ends.size(), 1u);
    EXPECT_GE(r.phase_ends[0], 81);
    EXPECT_LT(r.phase_ends[0], 81 + o.stride);  // a sliding window may straddle the boundary
    EXPECT_GT(r.phased_steps, 0);
    EXPECT_EQ(r.acc.tokens, base.acc.tokens);
    EXPECT_EQ(r.acc.bytes, base.acc.bytes);
    double pre_r = 0, pre_b = 0, post_r = 0, post_b = 0;
    for (int64_t t = 1; t < static_cast<int64_t>(toks.size()); ++t) {
      ASSERT_EQ(r.score_count[static_cast<size_t>(t)], 1);
      if (t < r.phase_ends[0]) {
        pre_r += r.token_nll[static_cast<size_t>(t)];
        pre_b += base.token_nll[static_cast<size_t>(t)];
      } else {
        post_r += r.token_nll[static_cast<size_t>(t)];
        post_b += base.token_nll[static_cast<size_t>(t)];
      }
    }
    EXPECT_NEAR(pre_r, pre_b, 1e-4) << "targets before the first phase end are scored with the artifact's weights";
    EXPECT_LT(post_r, post_b - 0.05 * static_cast<double>(toks.size() - static_cast<size_t>(r.phase_ends[0])))
        << mode_name(mode) << ": after global SGD on the scored prefix, repetitive text is easier";
    EXPECT_EQ(m.params().get("blocks.0.attn.c_q.weight").value.to_float_vector(), before);
  }
}

TEST(EvalPhasedTtt, CombinesWithChunkTtt) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = repetitive_docs(321);
  auto chunk_only = opts(Mode::Sliding);
  chunk_only.ttt.enabled = true;
  chunk_only.ttt.chunk_tokens = 100;  // chunk 0 spans the first phase end (81): the phase splits it
  chunk_only.ttt.lr = 0.02f;
  chunk_only.ttt.epochs = 1;
  chunk_only.ttt.batch_seqs = 4;
  auto both = chunk_only;
  both.phased = phased(4, 2);
  const auto a = evaluate(m, toks, luts, chunk_only);
  const auto b = evaluate(m, toks, luts, both);
  EXPECT_EQ(a.ttt_steps, b.ttt_steps);  // a split chunk still trains once, on all of its targets
  EXPECT_GT(b.phased_steps, 0);
  EXPECT_NE(a.acc.nll_nats, b.acc.nll_nats);
  // Up to the first phase end nothing differs.
  double da = 0, db = 0;
  for (int64_t t = 1; t < b.phase_ends.at(0); ++t) {
    da += a.token_nll[static_cast<size_t>(t)];
    db += b.token_nll[static_cast<size_t>(t)];
  }
  EXPECT_NEAR(da, db, 1e-4);
  bool has_global = false;
  for (const auto& [name, s] : b.phase_seconds) has_global |= name == "global_ttt";
  EXPECT_TRUE(has_global);
}

}  // namespace
}  // namespace pgolf::eval
