// Per-document LoRA TTT with frozen base weights (model::ParamTable::set_frozen, LoraTttOptions::frozen_base):
// the adapt backward skips every base-weight gradient, and nothing it scores or adapts may change. Each test
// compares the frozen path with the old full backward (frozen_base = false) on models that exercise every op
// with a parameter gradient (resnorm fusion and its unfused form, skip gates, LN scales, loops with loop
// embeddings, GPT-J lanes, SmearGate v1/v2, XSA, the attention gates, VRL, value embeddings, BigramHash, GDN).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "eval/lora_adapter.h"
#include "eval/scorer.h"
#include "eval_test_util.h"
#include "ops/elementwise.h"
#include "ops/random.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::synthetic_luts;

model::ModelConfig record_config() {  // the §5 record-stack switches on a tiny model
  model::ModelConfig c = testing::tiny_eval_config();
  c.num_layers = 4;
  c.rope_dims = 4;
  c.activation = "leaky_relu2";
  c.ln_scale = true;
  c.skip_gates = true;
  c.parallel_residual = "gptj";
  c.parallel_start = 2;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 1;
  c.loop_embeddings = true;
  c.smear_gate = "v2";
  c.xsa_layers = "all";
  c.attn_gate = "sparse";
  c.value_residual = true;
  c.ve_dim = 8;
  c.ve_layers = "1,3";
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  c.doc_isolated = true;
  return c;
}

model::ModelConfig unfused_config() {  // the unfused residual norms and two-lane residuals, SmearGate v1
  model::ModelConfig c = record_config();
  c.fuse_residual_norm = false;
  c.parallel_residual = "two_lane";
  c.smear_gate = "v1";
  c.attn_gate = "out";
  return c;
}

model::ModelConfig hybrid_config() {  // GatedDeltaNet layers (short convolutions, decay gates), plain stack
  model::ModelConfig c = testing::tiny_eval_config();
  c.num_layers = 4;
  c.gdn_layers = "0,2";
  c.unet = false;
  c.gdn_chunk = 4;
  return c;
}

model::GPT make_model(const model::ModelConfig& c, uint64_t seed) {
  model::GPT m(c, Device::CPU);
  m.init(seed);
  model::testing::randomize(m, seed);  // every parameter non-zero: every gradient path carries signal
  return m;
}

EvalOptions lora_opts(bool frozen) {
  EvalOptions o = testing::lora_test_options(32, 0.02f);
  o.lora.forward_tokens = 64;  // several documents per forward: batched adapters too
  o.lora.frozen_base = frozen;
  return o;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The scored per-token NLLs (and so the totals) of a LoRA TTT eval are bit for bit those of the full backward:
// skipping the base gradients changes no activation gradient, so no adapter gradient, step or later score.
TEST(EvalLoraFrozen, ScoresEqualTheFullBackwardBitForBit) {
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(300, 32, 21);
  for (const auto& [name, cfg] : {std::pair{"record", record_config()}, std::pair{"unfused", unfused_config()},
                                  std::pair{"hybrid", hybrid_config()}}) {
    SCOPED_TRACE(name);
    auto m = make_model(cfg, 5);
    const EvalResult full = evaluate(m, toks, luts, lora_opts(false));
    const EvalResult frozen = evaluate(m, toks, luts, lora_opts(true));
    EvalOptions still = lora_opts(true);
    still.lora.lr = 0;
    const EvalResult bare = evaluate(m, toks, luts, still);
    ASSERT_EQ(full.token_nll.size(), frozen.token_nll.size());
    ASSERT_GT(full.ttt_steps, 3);
    EXPECT_EQ(full.ttt_steps, frozen.ttt_steps);
    int differ = 0, adapted = 0;
    for (size_t t = 1; t < full.token_nll.size(); ++t) {
      differ += !same_bits(full.token_nll[t], frozen.token_nll[t]);
      adapted += full.token_nll[t] != bare.token_nll[t];
    }
    EXPECT_EQ(differ, 0) << "targets scored differently with frozen base weights";
    EXPECT_GT(adapted, 20) << "the adapters never moved: the comparison would be vacuous";
    EXPECT_EQ(full.acc.nll_nats, frozen.acc.nll_nats);
    EXPECT_EQ(full.acc.bpb(), frozen.acc.bpb());
  }
}

// One adapt step's backward in isolation: the losses and every adapter gradient agree bit for bit, the frozen
// table has no gradients at all, and the frozen backward's memory plan is no larger.
TEST(EvalLoraFrozen, AdapterGradientsEqualTheFullBackward) {
  for (const auto& cfg : {record_config(), unfused_config(), hybrid_config()}) {
    auto m = make_model(cfg, 9);
    LoraTttOptions lo;
    lo.rank = 3;
    LoraAdapters ad(m, lo, 2);
    ad.begin_batch(2);
    auto fs = ad.factors();
    for (size_t i = 0; i < fs.size(); ++i) ops::fill_uniform(fs[i].value, 17, i << 20, -0.3f, 0.3f);
    ad.sync_compute(2);
    m.set_adapter(&ad);
    ad.use_rows(0, 2);
    const int64_t B = 2, T = 12;
    const Tensor ids = model::testing::random_ids(B, T, 32, 3), targets = model::testing::random_ids(B, T, 32, 4);
    auto run = [&](bool frozen, size_t* plan) {
      m.params().set_frozen(frozen);
      *plan = m.plan_bytes(B, T);
      Arena arena(Device::CPU, "lora frozen");
      arena.reserve(*plan);
      ad.zero_grad(2);
      Tensor losses = Tensor::empty(Shape{B * T}, DType::F32);
      m.forward_backward_losses(ids, targets, 1.f / static_cast<float>(B * T), arena, losses);
      EXPECT_LE(arena.peak(), *plan);
      std::vector<std::vector<float>> out{losses.to_float_vector()};
      for (const auto& f : fs) out.push_back(f.grad.to_float_vector());
      return out;
    };
    size_t plan_full = 0, plan_frozen = 0;
    const auto full = run(false, &plan_full);
    const auto frozen = run(true, &plan_frozen);
    for (const model::Param& p : m.params().all()) EXPECT_FALSE(p.grad.defined()) << p.spec.name;
    EXPECT_FALSE(m.params().grad_flat().defined());
    EXPECT_LE(plan_frozen, plan_full);
    ASSERT_EQ(full.size(), frozen.size());
    double norm = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      ASSERT_EQ(full[i].size(), frozen[i].size());
      for (size_t j = 0; j < full[i].size(); ++j) {
        ASSERT_TRUE(same_bits(full[i][j], frozen[i][j])) << "tensor " << i << " element " << j << ": " << full[i][j]
                                                         << " vs " << frozen[i][j];
        if (i > 0) norm += std::fabs(full[i][j]);
      }
    }
    EXPECT_GT(norm, 0) << "no adapter gradient at all: the comparison would be vacuous";
    m.set_adapter(nullptr);
    m.params().set_frozen(false);
  }
}

// The base weights' gradient buffer is never written by a frozen LoRA TTT eval: a view of the old buffer (kept
// alive by the test) still holds its sentinel afterwards, and the table gets zeroed gradients back.
TEST(EvalLoraFrozen, BaseGradientBufferIsNeverWritten) {
  auto m = make_model(record_config(), 2);
  const Tensor old = m.params().grad_flat();
  ops::fill(old, 7.f);
  const EvalResult r = evaluate(m, doc_stream(200, 32, 3), synthetic_luts(32), lora_opts(true));
  EXPECT_GT(r.ttt_steps, 0);
  for (float v : old.to_float_vector()) ASSERT_EQ(v, 7.f);
  EXPECT_FALSE(m.params().frozen()) << "the table is handed back as it came";
  for (const model::Param& p : m.params().all()) {
    ASSERT_TRUE(p.grad.defined()) << p.spec.name;
    for (float v : p.grad.to_float_vector()) ASSERT_EQ(v, 0.f) << p.spec.name;
  }
  // A table frozen by the caller (pgolf eval --lora-ttt) stays frozen: no gradient buffer is ever allocated.
  m.params().set_frozen(true);
  (void)evaluate(m, doc_stream(200, 32, 3), synthetic_luts(32), lora_opts(true));
  EXPECT_TRUE(m.params().frozen());
  EXPECT_FALSE(m.params().grad_flat().defined());
}

// Unfreezing restores the gradient layout (the same ranges, zeroed) so training works on the table again.
TEST(EvalLoraFrozen, UnfreezingRestoresTheGradientLayout) {
  auto m = make_model(testing::tiny_eval_config(), 4);
  model::ParamTable& t = m.params();
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t i = 0; i < t.all().size(); ++i) ranges.push_back(t.grad_range(i));
  const int64_t flat = t.grad_flat().numel();
  t.set_frozen(true);
  t.set_frozen(true);  // a no-op
  t.set_frozen(false);
  ASSERT_EQ(t.grad_flat().numel(), flat);
  for (size_t i = 0; i < t.all().size(); ++i) {
    EXPECT_EQ(t.grad_range(i), ranges[i]);
    EXPECT_EQ(t.all()[i].grad.data(), static_cast<const float*>(t.grad_flat().data()) + ranges[i].first);
  }
  for (float v : t.grad_flat().to_float_vector()) ASSERT_EQ(v, 0.f);
}

}  // namespace
}  // namespace pgolf::eval
