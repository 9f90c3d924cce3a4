// Score-first TTT (TECHNIQUES.md §8.3): a chunk's score never depends on later tokens, the adapted
// weights really change later scores (and help on repetitive text), and the model comes back unchanged.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "eval/scorer.h"
#include "eval_test_util.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::synthetic_luts;
using testing::tiny_model;

EvalOptions ttt_opts(Mode mode) {
  EvalOptions o;
  o.mode = mode;
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

TEST(EvalTtt, ChunkScoreIgnoresLaterTokens) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(240, 32, 21);
  for (Mode mode : {Mode::Sliding, Mode::Doc}) {
    const auto o = ttt_opts(mode);
    const auto ref = evaluate(m, toks, luts, o);
    ASSERT_GE(ref.chunks.size(), 4u);
    EXPECT_GT(ref.ttt_steps, 0);
    for (size_t k = 0; k + 1 < ref.chunks.size(); ++k) {
      auto changed = toks;
      // Every non-BOS token after chunk k becomes another non-BOS id (document boundaries stay put).
      for (int64_t u = ref.chunks[k].end_target; u < static_cast<int64_t>(changed.size()); ++u) {
        uint16_t& x = changed[static_cast<size_t>(u)];
        if (x != testing::kBos) x = static_cast<uint16_t>(2 + (x - 2 + 5) % 30);
      }
      const auto alt = evaluate(m, changed, luts, o);
      for (size_t j = 0; j <= k; ++j) {
        ASSERT_EQ(alt.chunks[j].first_target, ref.chunks[j].first_target);
        EXPECT_EQ(alt.chunks[j].acc.nll_nats, ref.chunks[j].acc.nll_nats) << "chunk " << j << " after changing " << k;
      }
      // The next chunk was scored with weights trained on the same tokens, but its own tokens changed.
      EXPECT_NE(alt.chunks[k + 1].acc.nll_nats, ref.chunks[k + 1].acc.nll_nats);
    }
  }
}

TEST(EvalTtt, AdaptsLaterChunksAndRestoresTheModel) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  // Repetitive text: a period-13 pattern that SGD on earlier chunks can learn.
  std::vector<uint16_t> toks(289);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(2 + (i * 7) % 13);
  auto plain = ttt_opts(Mode::Sliding);
  plain.ttt.enabled = false;
  const auto before = m.params().get("blocks.0.attn.c_q.weight").value.to_float_vector();
  const auto base = evaluate(m, toks, luts, plain);
  const auto adapted = evaluate(m, toks, luts, ttt_opts(Mode::Sliding));
  EXPECT_EQ(m.params().get("blocks.0.attn.c_q.weight").value.to_float_vector(), before);
  EXPECT_EQ(adapted.acc.tokens, base.acc.tokens);
  EXPECT_EQ(adapted.acc.bytes, base.acc.bytes);
  // Later chunks are scored after SGD on the earlier, already-scored ones: better on repetitive text.
  EXPECT_LT(adapted.acc.loss(), base.acc.loss() - 0.05) << "ttt " << adapted.acc.loss() << " vs " << base.acc.loss();
  // Running again gives the same numbers (the adapted weights did not leak into the next call).
  EXPECT_EQ(evaluate(m, toks, luts, ttt_opts(Mode::Sliding)).acc.nll_nats, adapted.acc.nll_nats);
}

TEST(EvalTtt, FirstChunkMatchesNoTtt) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(200, 32, 23);
  auto o = ttt_opts(Mode::Sliding);
  const auto adapted = evaluate(m, toks, luts, o);
  o.ttt.enabled = false;
  o.keep_token_nll = true;
  const auto base = evaluate(m, toks, luts, o);
  double first = 0;
  for (int64_t t = adapted.chunks[0].first_target; t < adapted.chunks[0].end_target; ++t)
    first += base.token_nll[static_cast<size_t>(t)];
  EXPECT_NEAR(adapted.chunks[0].acc.nll_nats, first, 1e-4);
  EXPECT_NE(adapted.acc.nll_nats, base.acc.nll_nats);
}

TEST(EvalTtt, CosineLrSchedule) {
  TttOptions o;
  o.lr = 0.01f;
  EXPECT_FLOAT_EQ(ttt_chunk_lr(o, 0, 5), 0.01f);
  EXPECT_NEAR(ttt_chunk_lr(o, 2, 5), 0.005f, 1e-7);
  EXPECT_NEAR(ttt_chunk_lr(o, 4, 5), 0.f, 1e-9);
  EXPECT_FLOAT_EQ(ttt_chunk_lr(o, 0, 1), 0.01f);
}

}  // namespace
}  // namespace pgolf::eval
