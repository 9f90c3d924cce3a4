// The scorer on a tiny random CPU model: plain matches the trainer's validator, sliding scores every
// target once with the shared byte accounting, doc mode equals scoring each document on its own,
// batching does not change the numbers, and the time budget yields a flagged partial result.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "eval/scorer.h"
#include "eval_test_util.h"
#include "train/evaluate.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::synthetic_luts;
using testing::tiny_model;

EvalOptions opts(Mode m, int64_t T, int64_t s) {
  EvalOptions o;
  o.mode = m;
  o.context = T;
  o.stride = s;
  o.batch_tokens = 4 * T;
  o.keep_token_nll = true;
  return o;
}

TEST(EvalScorer, PlainMatchesTheTrainerValidator) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(16 * 9 + 1, 32, 11);
  train::Validator val(toks, luts, 16, 3, Device::CPU);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(3, 16, false));
  const auto want = val.run(m, arena);
  const auto got = evaluate(m, toks, luts, opts(Mode::Plain, 16, 4));
  EXPECT_EQ(got.acc.tokens, want.tokens);
  EXPECT_EQ(got.acc.bytes, want.bytes);
  EXPECT_NEAR(got.acc.nll_nats, want.nll_nats, 1e-6 * want.nll_nats);
  EXPECT_FALSE(got.partial);
}

TEST(EvalScorer, SlidingScoresEachTargetOnceAndCountsEveryByte) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const int64_t n = 203;  // not a multiple of anything: partial last window
  const auto toks = doc_stream(n, 32, 12);
  const auto r = evaluate(m, toks, luts, opts(Mode::Sliding, 32, 8));
  EXPECT_EQ(r.score_count[0], 0);
  for (int64_t t = 1; t < n; ++t) ASSERT_EQ(r.score_count[static_cast<size_t>(t)], 1) << t;
  EXPECT_EQ(r.acc.tokens, n - 1);
  EXPECT_EQ(r.acc.bytes, data::count_scored_bytes(luts, toks.data(), 1, n));
  double sum = 0;
  for (int64_t t = 1; t < n; ++t) sum += r.token_nll[static_cast<size_t>(t)];
  EXPECT_NEAR(r.acc.nll_nats, sum, 1e-3);
  // More context per target than the plain rows: the first window's targets agree exactly.
  const auto plain = evaluate(m, toks, luts, opts(Mode::Plain, 32, 32));
  for (int64_t t = 1; t <= 32; ++t)
    EXPECT_NEAR(r.token_nll[static_cast<size_t>(t)], plain.token_nll[static_cast<size_t>(t)], 1e-5);
  EXPECT_NE(r.acc.nll_nats, plain.acc.nll_nats);
  // stride == context is the plain schedule.
  const auto same = evaluate(m, toks, luts, opts(Mode::Sliding, 32, 32));
  EXPECT_EQ(same.acc.nll_nats, plain.acc.nll_nats);
}

TEST(EvalScorer, BatchingDoesNotChangeScores) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(300, 32, 13);
  for (Mode mode : {Mode::Sliding, Mode::Doc}) {
    auto a = opts(mode, 32, 8), b = a;
    a.batch_tokens = 32;       // one window per forward
    b.batch_tokens = 32 * 16;  // many
    const auto ra = evaluate(m, toks, luts, a), rb = evaluate(m, toks, luts, b);
    for (size_t t = 1; t < toks.size(); ++t) ASSERT_NEAR(ra.token_nll[t], rb.token_nll[t], 1e-5) << t;
  }
}

TEST(EvalScorer, DocModeEqualsScoringEachDocumentAlone) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const int64_t n = 260;
  const auto toks = doc_stream(n, 32, 14);
  const auto doc = evaluate(m, toks, luts, opts(Mode::Doc, 16, 4));
  for (int64_t t = 1; t < n; ++t) ASSERT_EQ(doc.score_count[static_cast<size_t>(t)], 1) << t;
  EXPECT_EQ(doc.acc.bytes, data::count_scored_bytes(luts, toks.data(), 1, n));
  // Each document [b, next BOS] as its own stream, sliding with the same context and stride.
  double total = 0;
  int64_t docs = 0;
  for (int64_t b = 0; b < n - 1;) {
    int64_t e = b + 1;
    while (e < n - 1 && toks[static_cast<size_t>(e)] != testing::kBos) ++e;
    std::vector<uint16_t> one(toks.begin() + b, toks.begin() + e + 1);  // includes the next BOS as last target
    const auto r = evaluate(m, one, luts, opts(Mode::Sliding, 16, 4));
    for (int64_t t = 1; t < static_cast<int64_t>(one.size()); ++t)
      ASSERT_NEAR(r.token_nll[static_cast<size_t>(t)], doc.token_nll[static_cast<size_t>(b + t)], 1e-5) << b + t;
    total += r.acc.nll_nats;
    ++docs;
    b = e;
  }
  EXPECT_GT(docs, 4);
  EXPECT_NEAR(doc.acc.nll_nats, total, 1e-3);
  // Isolation matters: the flat sliding score differs.
  EXPECT_NE(evaluate(m, toks, luts, opts(Mode::Sliding, 16, 4)).acc.nll_nats, doc.acc.nll_nats);
}

TEST(EvalScorer, TimeBudgetGivesAFlaggedPartialResult) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(400, 32, 15);
  auto o = opts(Mode::Sliding, 32, 4);
  o.batch_tokens = 32;
  o.time_budget_s = 1e-9;  // crossed after the first batch
  const auto r = evaluate(m, toks, luts, o);
  EXPECT_TRUE(r.partial);
  EXPECT_EQ(r.windows, 1);
  EXPECT_LT(r.acc.tokens, 399);
  EXPECT_EQ(r.acc.bytes, data::count_scored_bytes(luts, toks.data(), 1, r.acc.tokens + 1));
}

TEST(EvalScorer, RejectsTokensOutsideTheVocabulary) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  auto toks = doc_stream(50, 32, 16);
  toks[20] = 40;
  EXPECT_THROW(evaluate(m, toks, luts, opts(Mode::Plain, 16, 16)), Error);
}

}  // namespace
}  // namespace pgolf::eval
