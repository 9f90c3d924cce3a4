// Eval-time hash embedding (TECHNIQUES.md §8.5; src/eval/hash_embed.h): the zero table leaves the
// model's scores unchanged, chunk TTT trains it (at its own lr, projection and scale frozen), the
// result passes the legality audit and differs from TTT without it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "eval/audit.h"
#include "eval/hash_embed.h"
#include "eval/scorer.h"
#include "eval_test_util.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::synthetic_luts;
using testing::tiny_model;

HashEmbedOptions hash_opts() {
  HashEmbedOptions h;
  h.enabled = true;
  h.buckets = 64;
  return h;
}

EvalOptions opts() {
  EvalOptions o;
  o.mode = Mode::Sliding;
  o.context = 16;
  o.stride = 4;
  o.batch_tokens = 64;
  o.ttt.enabled = true;
  o.ttt.chunk_tokens = 48;
  o.ttt.lr = 0.05f;
  o.ttt.epochs = 2;
  o.ttt.batch_seqs = 2;
  return o;
}

TEST(EvalHashEmbed, ZeroTableScoresLikeTheModel) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(200, 32, 51);
  auto h = with_hash_embedding(m, hash_opts());
  auto o = opts();
  o.ttt.enabled = false;
  EXPECT_EQ(evaluate(*h, toks, luts, o).acc.nll_nats, evaluate(m, toks, luts, o).acc.nll_nats);
  EXPECT_EQ(h->params().get("bigram.embed.weight").value.shape()[0], 64);
  EXPECT_THROW(with_hash_embedding(*h, hash_opts()), Error);  // already has a table
  auto bad = hash_opts();
  bad.buckets = 1;
  EXPECT_THROW(with_hash_embedding(m, bad), Error);
}

TEST(EvalHashEmbed, TttTrainsTheTableOnlyAndChangesTheScore) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  std::vector<uint16_t> toks(289);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(2 + (i * 7) % 13);
  auto h = with_hash_embedding(m, hash_opts());
  const auto plain_ttt = evaluate(*h, toks, luts, opts());
  auto o = opts();
  o.ttt = hash_embed_ttt(o.ttt, hash_opts());
  o.keep_token_nll = true;
  const auto with_table = evaluate(*h, toks, luts, o);
  EXPECT_EQ(with_table.acc.tokens, plain_ttt.acc.tokens);
  EXPECT_NE(with_table.acc.nll_nats, plain_ttt.acc.nll_nats);
  // Chunk 0 is scored before any TTT: identical.
  EXPECT_NEAR(with_table.chunks[0].acc.nll_nats, plain_ttt.chunks[0].acc.nll_nats, 1e-6);
  // The table is restored to zero afterwards (the model is given back unchanged).
  for (float v : h->params().get("bigram.embed.weight").value.to_float_vector()) ASSERT_EQ(v, 0.f);

  // Only the table moves among the new tensors: train one chunk by hand.
  SgdAdapter ad(*h, o.ttt, 16);
  Arena arena(Device::CPU, "test");
  arena.reserve(ad.plan_bytes() + (1 << 20));
  ad.train(toks.data(), 1, 48, 0.05f, arena);
  double table = 0;
  for (float v : h->params().get("bigram.embed.weight").value.to_float_vector()) table += std::abs(v);
  EXPECT_GT(table, 0.0);
  const auto proj = h->params().get("bigram.proj.weight").value.to_float_vector();
  const int d = h->config().model_dim;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) ASSERT_EQ(proj[static_cast<size_t>(i * d + j)], i == j ? 1.f : 0.f);
  EXPECT_EQ(h->params().get("bigram.scale").value.to_float_vector()[0], 1.f);
}

TEST(EvalHashEmbed, PassesTheAudit) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(120, 32, 52);
  auto h = with_hash_embedding(m, hash_opts());
  for (Mode mode : {Mode::Sliding, Mode::Doc}) {
    auto o = opts();
    o.mode = mode;
    o.ttt.chunk_tokens = 32;
    o.ttt.epochs = 1;
    o.ttt = hash_embed_ttt(o.ttt, hash_opts());
    AuditOptions a;
    a.samples = 4;
    const auto r = audit(*h, toks, luts, o, a);
    EXPECT_TRUE(r.passed) << mode_name(mode) << ": " << (r.failures.empty() ? "" : r.failures.front());
    EXPECT_LT(r.max_causal_diff, 1e-5);
  }
}

}  // namespace
}  // namespace pgolf::eval
