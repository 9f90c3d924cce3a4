// `pgolf eval` split over loopback ranks (eval/scorer.h EvalOptions::comm, docs/DISTRIBUTED.md): plain, sliding and
// document-isolated scoring deal the forward batches over the ranks and add the all-gathered per-window sums in
// window order, so every world size gives the one-rank result bit for bit; score-first TTT runs its SGD data
// parallel (same update on every rank) and agrees with one rank within float rounding; modes that cannot be split
// refuse world > 1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "../eval/eval_test_util.h"
#include "dist/loopback_comm.h"
#include "eval/scorer.h"

using namespace pgolf;

namespace {

eval::EvalOptions base_opts(eval::Mode mode) {
  eval::EvalOptions o;
  o.mode = mode;
  o.context = 16;
  o.stride = mode == eval::Mode::Plain ? 16 : 4;
  o.batch_tokens = 48;  // 3 rows per forward
  return o;
}

// Runs `opt` on `world` loopback ranks (a fresh identical model per rank) and returns every rank's result.
std::vector<eval::EvalResult> run_split(int world, const std::vector<uint16_t>& toks, const data::ByteLuts& luts,
                                        eval::EvalOptions opt) {
  std::vector<eval::EvalResult> out(static_cast<size_t>(world));
  dist::run_loopback(world, [&](dist::Communicator& c) {
    model::GPT m = eval::testing::tiny_model();
    eval::EvalOptions o = opt;
    o.comm = &c;
    out[static_cast<size_t>(c.rank())] = eval::evaluate(m, toks, luts, o);
  }, 20);
  return out;
}

}  // namespace

TEST(DistScorer, SplitScoringEqualsOneRankExactly) {
  const auto luts = eval::testing::synthetic_luts(32);
  const auto toks = eval::testing::doc_stream(16 * 23 + 1, 32, 31);
  for (eval::Mode mode : {eval::Mode::Plain, eval::Mode::Sliding, eval::Mode::Doc}) {
    const eval::EvalOptions o = base_opts(mode);
    model::GPT m = eval::testing::tiny_model();
    const eval::EvalResult ref = eval::evaluate(m, toks, luts, o);
    ASSERT_EQ(ref.acc.tokens, static_cast<int64_t>(toks.size()) - 1);
    ASSERT_GT(ref.total_windows, 3 * 5) << "several rounds of batches in every world";
    for (int world : {2, 3, 5}) {
      const auto got = run_split(world, toks, luts, o);
      for (const auto& r : got) {
        const std::string where = std::string(eval::mode_name(mode)) + " world " + std::to_string(world);
        EXPECT_EQ(r.world, world);
        EXPECT_EQ(r.acc.nll_nats, ref.acc.nll_nats) << where;  // bit for bit
        EXPECT_EQ(r.acc.tokens, ref.acc.tokens) << where;
        EXPECT_EQ(r.acc.bytes, ref.acc.bytes) << where;
        EXPECT_EQ(r.acc.bpb(), ref.acc.bpb()) << where;
        EXPECT_EQ(r.windows, ref.windows) << where;
        EXPECT_FALSE(r.partial) << where;
      }
    }
  }
}

TEST(DistScorer, TimeBudgetStopsEveryRankTogether) {
  const auto luts = eval::testing::synthetic_luts(32);
  const auto toks = eval::testing::doc_stream(16 * 23 + 1, 32, 31);
  eval::EvalOptions o = base_opts(eval::Mode::Sliding);
  o.time_budget_s = 1e-9;  // rank 0's clock is over after the first round
  for (int world : {2, 3}) {
    const auto got = run_split(world, toks, luts, o);
    for (const auto& r : got) {
      EXPECT_TRUE(r.partial);
      EXPECT_EQ(r.windows, 3 * world) << "one round: one batch of 3 windows per rank";
      EXPECT_EQ(r.acc.nll_nats, got[0].acc.nll_nats);
      EXPECT_EQ(r.acc.tokens, got[0].acc.tokens);
      EXPECT_EQ(r.acc.bytes, got[0].acc.bytes);
    }
  }
}

// Data-parallel SGD sums the ranks' gradients in another order than one backward over all rows, so TTT results
// agree within rounding only. Chunk 0 is scored before any SGD, so it is still exact.
TEST(DistScorer, SplitTttMatchesOneRankWithinRounding) {
  const auto luts = eval::testing::synthetic_luts(32);
  const auto toks = eval::testing::doc_stream(16 * 23 + 1, 32, 37);
  for (eval::Mode mode : {eval::Mode::Sliding, eval::Mode::Doc}) {
    eval::EvalOptions o = base_opts(mode);
    o.ttt.enabled = true;
    o.ttt.chunk_tokens = 80;  // 5 training rows of 16 per chunk
    o.ttt.lr = 0.05f;
    o.ttt.epochs = 2;
    o.ttt.batch_seqs = 2;     // steps of 2, 2, 1 rows: with 3 ranks some ranks have no row in a step
    model::GPT m = eval::testing::tiny_model();
    const eval::EvalResult ref = eval::evaluate(m, toks, luts, o);
    o.ttt.enabled = false;
    const eval::EvalResult no_ttt = eval::evaluate(m, toks, luts, o);
    o.ttt.enabled = true;
    ASSERT_GE(ref.chunks.size(), 4u);
    ASSERT_GT(ref.ttt_steps, 0);
    ASSERT_GT(std::fabs(ref.acc.nll_nats - no_ttt.acc.nll_nats), 1e-3) << "TTT must change the score";
    for (int world : {2, 3}) {
      const auto got = run_split(world, toks, luts, o);
      const std::string where = std::string(eval::mode_name(mode)) + " world " + std::to_string(world);
      std::printf("[ttt split] %s: val_bpb %.9f vs one rank %.9f (relative difference %.1e)\n", where.c_str(),
                  got[0].acc.bpb(), ref.acc.bpb(), std::fabs(got[0].acc.bpb() - ref.acc.bpb()) / ref.acc.bpb());
      for (const auto& r : got) {
        // Every rank applied the same updates: identical results on all ranks.
        EXPECT_EQ(r.acc.nll_nats, got[0].acc.nll_nats) << where;
        EXPECT_EQ(r.ttt_steps, ref.ttt_steps) << where;
        EXPECT_EQ(r.acc.tokens, ref.acc.tokens) << where;
        EXPECT_EQ(r.acc.bytes, ref.acc.bytes) << where;
        ASSERT_EQ(r.chunks.size(), ref.chunks.size()) << where;
        EXPECT_EQ(r.chunks[0].acc.nll_nats, ref.chunks[0].acc.nll_nats) << where;
        EXPECT_NEAR(r.acc.bpb(), ref.acc.bpb(), 1e-7 * ref.acc.bpb()) << where;
        EXPECT_NEAR(r.acc.nll_nats, ref.acc.nll_nats, 1e-7 * ref.acc.nll_nats) << where;
      }
    }
  }
}

TEST(DistScorer, UnsplittableModesRefuseWorldAboveOne) {
  const auto luts = eval::testing::synthetic_luts(32);
  const auto toks = eval::testing::doc_stream(16 * 8 + 1, 32, 41);
  auto expect_refused = [&](eval::EvalOptions o, const std::string& what, const std::string& needle) {
    dist::run_loopback(2, [&](dist::Communicator& c) {
      model::GPT m = eval::testing::tiny_model();
      o.comm = &c;
      try {
        eval::evaluate(m, toks, luts, o);
        ADD_FAILURE() << what << " ran with world 2";
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
      }
    }, 20);
  };
  eval::EvalOptions o = base_opts(eval::Mode::Sliding);
  o.ngram.enabled = true;
  expect_refused(o, "--ngram", "cannot be split over ranks");
  o = base_opts(eval::Mode::Sliding);
  o.tapin.enabled = true;
  expect_refused(o, "--tapin", "cannot be split over ranks");
  o = base_opts(eval::Mode::Sliding);
  o.phased.enabled = true;
  o.phased.prefix_docs = 2;
  o.phased.phases = 1;
  expect_refused(o, "--phased-ttt", "cannot be split over ranks");
  o = base_opts(eval::Mode::Sliding);
  o.keep_token_nll = true;
  expect_refused(o, "keep_token_nll", "need one rank");
  o = base_opts(eval::Mode::Sliding);
  o.probes = {5};
  expect_refused(o, "probes", "need one rank");
}
