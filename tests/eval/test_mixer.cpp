// The eval-time mixtures (TECHNIQUES.md §8.6, §8.7; src/eval/mixer.h): the n-gram distribution is
// full, sums to 1 and is built only from observed (scored) targets; Tap-In finds the right hint from
// the prefix only; both, through the scorer, keep the byte accounting and help on repetitive text.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "eval/mixer.h"
#include "eval/scorer.h"
#include "eval_test_util.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::synthetic_luts;
using testing::tiny_model;

NgramOptions ngram_opts(int min_order, int max_order, int min_count) {
  NgramOptions o;
  o.enabled = true;
  o.min_order = min_order;
  o.max_order = max_order;
  o.min_count = min_count;
  return o;
}

// Brute force: counts of the token following context tokens[t-n+1..t-1] over the observed targets u.
std::map<int, int> brute_counts(const std::vector<uint16_t>& toks, int64_t t, int n, const std::vector<bool>& observed) {
  std::map<int, int> c;
  for (int64_t u = n - 1; u < static_cast<int64_t>(toks.size()); ++u) {
    if (!observed[static_cast<size_t>(u)]) continue;
    bool same = true;
    for (int j = 1; j < n && same; ++j) same = toks[static_cast<size_t>(u - j)] == toks[static_cast<size_t>(t - j)];
    if (same) ++c[toks[static_cast<size_t>(u)]];
  }
  return c;
}

TEST(EvalNgram, DistributionIsNormalisedAndCountsOnlyObservedTargets) {
  const int V = 8;
  std::vector<uint16_t> toks(400);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(rng::bits(5, i).x % 4);  // dense contexts
  const auto o = ngram_opts(2, 4, 2);
  NgramCache cache(o);
  std::vector<bool> observed(toks.size(), false);
  int fired = 0, orders_seen[5] = {0, 0, 0, 0, 0};
  for (int64_t t = 1; t < static_cast<int64_t>(toks.size()); ++t) {
    const auto q = cache.query(toks.data(), t);
    // The order that fires is the highest whose context was observed >= min_count times.
    int expect_order = 0;
    for (int n = o.max_order; n >= o.min_order && expect_order == 0; --n) {
      if (t - (n - 1) < 0) continue;
      int total = 0;
      for (auto [k, c] : brute_counts(toks, t, n, observed)) total += c;
      if (total >= o.min_count) expect_order = n;
    }
    ASSERT_EQ(q.order, expect_order) << "t " << t;
    if (q.order > 0) {
      ++fired;
      ++orders_seen[q.order];
      const auto bc = brute_counts(toks, t, q.order, observed);
      double sum = 0;
      for (int k = 0; k < V; ++k) {
        const double p = cache.prob(q, k);
        sum += p;
        const auto it = bc.find(k);
        EXPECT_DOUBLE_EQ(p, it == bc.end() ? 0.0 : static_cast<double>(it->second) / q.total) << "t " << t << " k " << k;
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
    // Every third target is left unscored (as after a time budget): it must never be counted.
    if (t % 3 != 0) {
      cache.observe(toks.data(), t);
      observed[static_cast<size_t>(t)] = true;
    }
  }
  EXPECT_GT(fired, 300);
  EXPECT_GT(orders_seen[2], 0);
  EXPECT_GT(orders_seen[4], 100);
}

TEST(EvalNgram, QueryReadsOnlyThePrefix) {
  std::vector<uint16_t> toks(200);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(rng::bits(9, i).x % 3);
  NgramCache cache(ngram_opts(2, 5, 1));
  for (int64_t t = 1; t < 150; ++t) cache.observe(toks.data(), t);
  auto changed = toks;
  for (size_t u = 150; u < changed.size(); ++u) changed[u] = static_cast<uint16_t>((changed[u] + 1) % 3);
  const auto a = cache.query(toks.data(), 150), b = cache.query(changed.data(), 150);
  ASSERT_GT(a.order, 0);
  EXPECT_EQ(a.order, b.order);
  EXPECT_EQ(a.total, b.total);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(cache.prob(a, k), cache.prob(b, k));
}

TEST(EvalNgram, AlphaFollowsTheEntropy) {
  NgramCache c(ngram_opts(2, 3, 1));
  EXPECT_NEAR(c.alpha(4.0), 0.05 + 0.55 * 0.5, 1e-6);
  EXPECT_LT(c.alpha(0.0), 0.06);
  EXPECT_GT(c.alpha(10.0), 0.59);
  auto o = ngram_opts(2, 3, 1);
  o.alpha_entropy = false;
  o.alpha_fixed = 0.3f;
  EXPECT_FLOAT_EQ(NgramCache(o).alpha(10.0), 0.3f);
}

TEST(EvalNgram, MixtureIsAFullDistributionAndMatchesTheScoredValue) {
  std::vector<uint16_t> toks = {1, 2, 3, 2, 3, 2, 4, 2, 3, 2};
  NgramCache cache(ngram_opts(2, 3, 1));
  for (int64_t t = 1; t < 9; ++t) cache.observe(toks.data(), t);
  const auto q = cache.query(toks.data(), 9);  // context "... 2 3" -> continuation 2 seen twice
  ASSERT_EQ(q.order, 3);
  EXPECT_DOUBLE_EQ(cache.prob(q, 2), 1.0);
  std::vector<float> model_lp(6);
  double z = 0;
  for (int k = 0; k < 6; ++k) z += std::exp(0.3 * k);
  for (int k = 0; k < 6; ++k) model_lp[k] = static_cast<float>(0.3 * k - std::log(z));
  for (int hint : {-1, 4}) {
    const auto mixed = mixed_distribution(model_lp, &cache, q, 0.25, hint, 0.1);
    double sum = 0;
    for (int k = 0; k < 6; ++k) {
      sum += std::exp(static_cast<double>(mixed[k]));
      EXPECT_NEAR(mixed[k], mixed_logprob(model_lp[k], &cache, q, 0.25, k, hint, 0.1), 1e-6);
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
  // p'(2) = 0.75 p(2) + 0.25 (no hint).
  EXPECT_NEAR(std::exp(mixed_logprob(model_lp[2], &cache, q, 0.25, 2, -1, 0)), 0.75 * std::exp(model_lp[2]) + 0.25,
              1e-7);
}

TapInOptions tap_opts(int min_match) {
  TapInOptions o;
  o.enabled = true;
  o.min_match = min_match;
  return o;
}

TEST(EvalTapIn, FindsTheLongestMatchAndItsContinuation) {
  //                 0  1  2  3  4  5  6  7  8  9 10 11 12
  std::vector<uint16_t> t = {1, 5, 6, 7, 8, 9, 4, 6, 7, 3, 5, 6, 7};
  // Target 13 would follow input x_12 = 7: matches ending at 3 ("5 6 7", length 3 -> 8) and at 8 ("6 7", 2 -> 3).
  t.push_back(0);
  TapIn tap(tap_opts(1), t.data(), static_cast<int64_t>(t.size()), 16);
  TapHint h = tap.hint(13, 0, 0);
  EXPECT_EQ(h.token, 8);
  EXPECT_EQ(h.match, 3);
  EXPECT_EQ(h.votes, 1);
  EXPECT_FALSE(h.cross);
  EXPECT_NEAR(h.weight, 0.01 * (1 + 0.15 * 2), 1e-8);  // w0 is a float
  // min_match 4: no match is long enough.
  EXPECT_EQ(TapIn(tap_opts(4), t.data(), static_cast<int64_t>(t.size()), 16).hint(13, 0, 0).token, -1);
  // Window starting at 5: only the match at 8 is inside; the earlier one becomes a cross-window hint
  // only when no in-window match exists.
  h = tap.hint(13, 5, 0);
  EXPECT_EQ(h.token, 3);
  EXPECT_EQ(h.match, 2);
  h = tap.hint(13, 9, 0);
  EXPECT_EQ(h.token, 8);
  EXPECT_TRUE(h.cross);
  EXPECT_GT(h.weight, 0.06);
  auto no_cross = tap_opts(1);
  no_cross.cross_window = false;
  EXPECT_EQ(TapIn(no_cross, t.data(), static_cast<int64_t>(t.size()), 16).hint(13, 9, 0).token, -1);
  // Document start at 4: the "5 6 7" match at 1..3 is in an earlier document; "6 7" -> 3 remains.
  h = tap.hint(13, 9, 4);
  EXPECT_EQ(h.token, 3);
  EXPECT_EQ(h.match, 2);
  EXPECT_TRUE(h.cross);
}

TEST(EvalTapIn, VotesAndPrefixOnly) {
  std::vector<uint16_t> t = {2, 4, 2, 4, 2, 5, 2};
  TapIn tap(tap_opts(1), t.data(), 7, 8);
  // Input x_6 = 2: matches at 0, 2 (continuation 4, length 1 and 2? x_1=4 vs x_5=5: length 1 each) and 4 (-> 5).
  const TapHint h = tap.hint(7 - 0, 0, 0);  // target 7 does not exist in t; hint only reads t[0..6]
  EXPECT_EQ(h.token, 4);
  EXPECT_EQ(h.votes, 2);
  // The hint at target 6 (input x_5 = 5) has no earlier 5: none; changing x_6 cannot matter.
  auto changed = t;
  changed[6] = 5;
  EXPECT_EQ(TapIn(tap_opts(1), changed.data(), 7, 8).hint(6, 0, 0).token, tap.hint(6, 0, 0).token);
  EXPECT_EQ(tap.hint(6, 0, 0).token, -1);
}

EvalOptions mix_opts(Mode mode) {
  EvalOptions o;
  o.mode = mode;
  o.context = 16;
  o.stride = 4;
  o.batch_tokens = 64;
  o.keep_token_nll = true;
  return o;
}

TEST(EvalMixing, ScorerKeepsAccountingAndHelpsOnRepetitiveText) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  // Documents repeating one period-11 phrase: both the n-gram cache and Tap-In can predict it.
  std::vector<uint16_t> toks(301);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = i % 50 == 0 ? testing::kBos : static_cast<uint16_t>(2 + (i * 5) % 11);
  for (Mode mode : {Mode::Sliding, Mode::Doc}) {
    const auto base = evaluate(m, toks, luts, mix_opts(mode));
    auto ng = mix_opts(mode);
    ng.ngram = ngram_opts(2, 5, 2);
    auto tap = mix_opts(mode);
    tap.tapin = tap_opts(1);
    tap.tapin.top_k = 0;
    tap.tapin.w_window = tap.tapin.w_cross = 0.3f;
    auto both = ng;
    both.tapin = tap.tapin;
    both.tapin.top_k = 16;  // the gate path (full distributions)
    for (const auto* o : {&ng, &tap, &both}) {
      const auto r = evaluate(m, toks, luts, *o);
      EXPECT_EQ(r.acc.tokens, base.acc.tokens);
      EXPECT_EQ(r.acc.bytes, base.acc.bytes);
      for (size_t t = 1; t < toks.size(); ++t) ASSERT_EQ(r.score_count[t], 1) << t;
      EXPECT_LT(r.acc.loss(), base.acc.loss() - 0.3) << mode_name(mode) << " mixed " << r.acc.loss() << " vs "
                                                      << base.acc.loss();
      // The first target has nothing to learn from: the mixture is the model there.
      EXPECT_NEAR(r.token_nll[1], base.token_nll[1], 1e-5);
      EXPECT_EQ(r.phase_seconds[2].first, "mix");
    }
    EXPECT_GT(evaluate(m, toks, luts, ng).ngram_fired, 200);
    EXPECT_GT(evaluate(m, toks, luts, tap).tapin_fired, 200);
  }
}

TEST(EvalMixing, GateDropsHintsOutsideTheTopK) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(200, 32, 41);
  auto o = mix_opts(Mode::Sliding);
  o.tapin = tap_opts(1);
  o.tapin.top_k = 0;
  const auto open = evaluate(m, toks, luts, o);
  o.tapin.top_k = 3;
  const auto gated = evaluate(m, toks, luts, o);
  o.tapin.top_k = 32;  // every id is in the top 32 of a vocabulary of 32
  const auto all = evaluate(m, toks, luts, o);
  EXPECT_GT(open.tapin_fired, 50);
  EXPECT_LT(gated.tapin_fired, open.tapin_fired);
  EXPECT_EQ(all.tapin_fired, open.tapin_fired);
  EXPECT_NEAR(all.acc.nll_nats, open.acc.nll_nats, 1e-3);
}

TEST(EvalMixing, RejectsNonsenseOptions) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(60, 32, 42);
  auto o = mix_opts(Mode::Sliding);
  o.ngram = ngram_opts(3, 2, 2);
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
  o.ngram = ngram_opts(1, 4, 2);
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
  o.ngram = ngram_opts(2, 4, 0);
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
  o.ngram = ngram_opts(2, 4, 2);
  o.ngram.alpha_entropy = false;
  o.ngram.alpha_fixed = 1.5f;
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
  o.ngram = NgramOptions{};
  o.tapin = tap_opts(0);
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
  o.tapin = tap_opts(1);
  o.tapin.w_max = 1.f;
  EXPECT_THROW(evaluate(m, toks, luts, o), Error);
}

}  // namespace
}  // namespace pgolf::eval
