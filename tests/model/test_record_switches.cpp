// The record-stack switches added for issue 5 (TECHNIQUES.md §5.7–§5.11, §5.13–§5.15): XSA,
// SmearGate v1/v2, two-lane parallel residuals, document-isolated attention, attention output
// gates, value residual learning, value embeddings and BigramHash. Whole-model
// gradients against finite differences with each switch on, and the isolation properties.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model/gpt.h"
#include "model_test_util.h"
#include "ops/bigram.h"
#include "ops/random.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

ModelConfig base4() {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.rope_dims = 4;
  c.activation = "leaky_relu2";
  return c;
}

// ids with BOS (id 1) at a few places, so document boundaries and the smear mask are exercised.
Tensor ids_with_bos(uint64_t seed) {
  Tensor ids = random_ids(2, 8, 32, seed);
  int32_t* p = ids.ptr<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    if (p[i] == 1) p[i] = 2;
  p[0] = 1;
  p[3] = 1;
  p[8 + 5] = 1;
  return ids;
}

std::vector<float> losses_of(GPT& m, const Tensor& ids, const Tensor& targets) {
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(ids.dim(0), ids.dim(1), false));
  Tensor losses = Tensor::zeros(Shape{ids.numel()}, DType::F32);
  m.forward_losses(ids, targets, arena, losses);
  return losses.to_float_vector();
}

double mean_loss(GPT& m, const Tensor& ids, const Tensor& targets, Arena& arena) {
  Tensor losses = Tensor::zeros(Shape{ids.numel()}, DType::F32);
  m.forward_losses(ids, targets, arena, losses);
  double s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s / static_cast<double>(ids.numel());
}

// Finite differences on the largest two gradient entries and one arbitrary entry of every parameter.
void expect_gradients_match(const ModelConfig& c, uint64_t seed) {
  GPT m(c, Device::CPU);
  randomize(m, seed);
  const Tensor ids = ids_with_bos(seed + 1), targets = random_ids(2, 8, 32, seed + 2);
  const int64_t N = ids.numel();
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(ids, targets, 1.f / static_cast<float>(N), arena, loss_sum);
  EXPECT_LE(arena.peak(), m.plan_bytes(2, 8));
  Arena eval_arena(Device::CPU);  // the forward-only plan is its own (a forward-only tape frees nothing)
  eval_arena.reserve(m.plan_bytes(2, 8, false));
  int checked = 0;
  for (Param& p : m.params().all()) {
    const auto grad = p.grad.to_float_vector();
    float* w = p.value.ptr<float>();
    std::vector<size_t> order(grad.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    const size_t top = std::min<size_t>(2, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(top), order.end(),
                      [&](size_t a, size_t b) { return std::fabs(grad[a]) > std::fabs(grad[b]); });
    std::vector<size_t> picks(order.begin(), order.begin() + static_cast<long>(top));
    picks.push_back(grad.size() / 3);
    for (size_t i : picks) {
      const float h = 1e-2f, saved = w[i];
      w[i] = saved + h;
      const double up = mean_loss(m, ids, targets, eval_arena);
      w[i] = saved - h;
      const double down = mean_loss(m, ids, targets, eval_arena);
      w[i] = saved;
      const double fd = (up - down) / (2.0 * h), an = grad[i];
      ++checked;
      EXPECT_LE(std::fabs(fd - an), 3e-2 * std::fabs(an) + 3e-4)
          << p.spec.name << "[" << i << "]: analytic " << an << " vs finite difference " << fd;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(RecordSwitches, XsaGradients) {
  ModelConfig c = base4();
  c.xsa_layers = "all";
  expect_gradients_match(c, 31);
  c.xsa_layers = "1,3";
  expect_gradients_match(c, 32);
}

TEST(RecordSwitches, DocIsolatedGradients) {
  ModelConfig c = base4();
  c.doc_isolated = true;
  expect_gradients_match(c, 33);
}

TEST(RecordSwitches, SmearGateV1Gradients) {
  ModelConfig c = base4();
  c.smear_gate = "v1";
  expect_gradients_match(c, 34);
}

TEST(RecordSwitches, SmearGateV2Gradients) {
  ModelConfig c = base4();
  c.smear_gate = "v2";
  expect_gradients_match(c, 35);
}

TEST(RecordSwitches, TwoLaneGradients) {
  ModelConfig c = base4();
  c.parallel_residual = "two_lane";
  c.parallel_start = 2;  // decoder slots are layers 2, 3: lanes from the first one
  c.skip_gates = true;
  expect_gradients_match(c, 36);
  c.parallel_start = 3;  // lanes split at the last block only
  expect_gradients_match(c, 37);
}

TEST(RecordSwitches, AllTogetherWithLoopsGradients) {
  ModelConfig c = base4();
  c.xsa_layers = "all";
  c.doc_isolated = true;
  c.smear_gate = "v2";
  c.parallel_residual = "two_lane";
  c.parallel_start = 2;
  c.skip_gates = true;
  c.ln_scale = true;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 1;
  expect_gradients_match(c, 38);
}

TEST(RecordSwitches, EachSwitchChangesTheFunction) {
  const Tensor ids = ids_with_bos(40), targets = random_ids(2, 8, 32, 41);
  auto loss_with = [&](const ModelConfig& c) {
    GPT m(c, Device::CPU);
    randomize(m, 42);
    const auto l = losses_of(m, ids, targets);
    double s = 0;
    for (float v : l) s += v;
    return s;
  };
  const double l0 = loss_with(base4());
  ModelConfig c = base4();
  c.xsa_layers = "2";
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.doc_isolated = true;
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.smear_gate = "v1";
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.smear_gate = "v2";
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.parallel_residual = "two_lane";
  c.parallel_start = 2;
  EXPECT_NE(loss_with(c), l0);
  c.parallel_start = 4;  // no decoder layer reaches the start: the sequential model
  EXPECT_EQ(loss_with(c), l0);
}

TEST(RecordSwitches, DocumentsDoNotSeeEachOther) {
  // Changing tokens of one document leaves every loss of the next document unchanged, with SmearGate
  // v2 on (its BOS mask) and XSA on; without isolation the losses do change.
  ModelConfig c = base4();
  c.doc_isolated = true;
  c.smear_gate = "v2";
  c.xsa_layers = "all";
  GPT m(c, Device::CPU);
  randomize(m, 43);
  Tensor ids = ids_with_bos(44);  // row 0: BOS at 0 and 3
  const Tensor targets = random_ids(2, 8, 32, 45);
  const auto before = losses_of(m, ids, targets);
  ids.ptr<int32_t>()[1] = 7;
  ids.ptr<int32_t>()[2] = ids.ptr<int32_t>()[2] == 9 ? 10 : 9;
  const auto after = losses_of(m, ids, targets);
  for (int t = 3; t < 16; ++t) EXPECT_EQ(before[static_cast<size_t>(t)], after[static_cast<size_t>(t)]) << t;
  EXPECT_NE(before[1], after[1]);
  c.doc_isolated = false;
  GPT open(c, Device::CPU);
  randomize(open, 43);
  const auto open_after = losses_of(open, ids, targets);
  ids.ptr<int32_t>()[1] = 8;
  const auto open_changed = losses_of(open, ids, targets);
  EXPECT_NE(open_after[4], open_changed[4]) << "without isolation the next document does see the change";
}

TEST(RecordSwitches, NewParametersHaveTheSpecShapesAndInits) {
  ModelConfig c = base4();
  c.smear_gate = "v2";
  c.parallel_residual = "two_lane";
  GPT m(c, Device::CPU);
  m.init(1);
  EXPECT_EQ(m.params().get("smear_gate.weight").spec.shape, (Shape{12}));
  EXPECT_EQ(m.params().get("smear_gate.lambda").value.to_float_vector(), (std::vector<float>{0.f}));
  const auto rho = m.params().get("lane_resid").value.to_float_vector();
  EXPECT_EQ(rho.size(), 8u);
  EXPECT_FLOAT_EQ(rho[5], 1.1f);
  EXPECT_EQ(m.params().get("lane_route").spec.shape, (Shape{4, 2, 2}));
  c.smear_gate = "v1";
  GPT m1(c, Device::CPU);
  EXPECT_EQ(m1.params().get("smear_gate.gate").spec.shape, (Shape{32}));
  auto make = [](const ModelConfig& cc) { GPT g(cc, Device::CPU); };
  c.smear_gate = "v3";
  EXPECT_THROW(make(c), Error);
  c.smear_gate = "none";
  c.xsa_layers = "0,9";
  EXPECT_THROW(make(c), Error);
}

// ---- Second batch: attention output gates (§5.14), VRL (§5.11), value embeddings (§5.10),
// BigramHash (§5.9). ----

TEST(RecordSwitches, AttnGateGradients) {
  ModelConfig c = base4();
  for (const char* kind : {"out", "sparse", "dense"}) {
    SCOPED_TRACE(kind);
    c.attn_gate = kind;
    c.attn_gate_window = 12;
    expect_gradients_match(c, 50);
  }
  c.attn_gate = "sparse";
  c.attn_gate_window = 5;
  c.attn_gate_scale = 1.5f;
  c.xsa_layers = "all";  // the gate multiplies the post-XSA output
  expect_gradients_match(c, 51);
}

TEST(RecordSwitches, ValueResidualGradients) {
  ModelConfig c = base4();
  c.value_residual = true;
  expect_gradients_match(c, 52);
  c.loop_start = 1;  // layer 0's values feed every pass of the loop
  c.loop_end = 2;
  c.loop_passes = 1;
  expect_gradients_match(c, 53);
}

TEST(RecordSwitches, ValueEmbeddingGradients) {
  ModelConfig c = base4();
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  expect_gradients_match(c, 54);
  c.value_residual = true;  // VE and VRL together (seed #915)
  c.xsa_layers = "3";
  expect_gradients_match(c, 55);
}

TEST(RecordSwitches, BigramHashGradients) {
  ModelConfig c = base4();
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  expect_gradients_match(c, 56);
  c.smear_gate = "v1";  // seeds #1072/#915: SmearGate v1 after RMSN(E[t] + bigram)
  expect_gradients_match(c, 57);
}

TEST(RecordSwitches, Seed915StackGradients) {
  ModelConfig c = base4();
  c.value_residual = true;
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  c.smear_gate = "v1";
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  c.xsa_layers = "2,3";
  c.ln_scale = true;
  expect_gradients_match(c, 58);
}

TEST(RecordSwitches, TopRecordStackGradients) {
  ModelConfig c = base4();
  c.attn_gate = "sparse";
  c.xsa_layers = "all";
  c.doc_isolated = true;
  c.smear_gate = "v2";
  c.parallel_residual = "two_lane";
  c.parallel_start = 2;
  c.skip_gates = true;
  c.ln_scale = true;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 1;
  expect_gradients_match(c, 59);
}

TEST(RecordSwitches, EachNewSwitchChangesTheFunction) {
  const Tensor ids = ids_with_bos(60), targets = random_ids(2, 8, 32, 61);
  auto loss_with = [&](const ModelConfig& c) {
    GPT m(c, Device::CPU);
    randomize(m, 62);
    double s = 0;
    for (float v : losses_of(m, ids, targets)) s += v;
    return s;
  };
  const double l0 = loss_with(base4());
  ModelConfig c = base4();
  for (const char* kind : {"out", "sparse", "dense"}) {
    c.attn_gate = kind;
    EXPECT_NE(loss_with(c), l0) << kind;
  }
  c = base4();
  c.value_residual = true;
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.ve_dim = 8;
  c.ve_layers = "3";
  EXPECT_NE(loss_with(c), l0);
  c = base4();
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  EXPECT_NE(loss_with(c), l0);
}

TEST(RecordSwitches, NewSwitchesAtTheirInitAreTheBaselineFunction) {
  // out/sparse gates (W = 0: gate 1 resp. 0.5 everywhere, so "out" is exactly the identity), VE
  // (zero projection) and BigramHash (zero table) change nothing at the real init.
  const Tensor ids = ids_with_bos(63), targets = random_ids(2, 8, 32, 64);
  auto losses_at_init = [&](const ModelConfig& c) {
    GPT m(c, Device::CPU);
    m.init(5);
    // Non-zero output projections, or every block is the identity at init.
    for (Param& p : m.params().all())
      if (p.spec.name.find("proj.weight") != std::string::npos && p.spec.name.find("blocks.") == 0)
        ops::fill_uniform(p.value, 9, 1000, -0.1f, 0.1f);
    m.params().sync_compute();
    return losses_of(m, ids, targets);
  };
  const auto base = losses_at_init(base4());
  ModelConfig c = base4();
  c.attn_gate = "out";
  EXPECT_EQ(losses_at_init(c), base);
  c = base4();
  c.ve_dim = 8;
  c.ve_layers = "1,3";
  EXPECT_EQ(losses_at_init(c), base);
  c = base4();
  c.bigram_buckets = 16;
  EXPECT_EQ(losses_at_init(c), base);
  c = base4();
  c.attn_gate = "sparse";  // 0.5 times every head's output
  EXPECT_NE(losses_at_init(c), base);
}

TEST(RecordSwitches, ZeroInitialisedModulesLearnFromTheRealInit) {
  // At the real init (block output projections made non-zero) the zero-initialised tensors of the new
  // modules get a gradient: none of them is a fixed point.
  ModelConfig c = base4();
  c.attn_gate = "sparse";
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  c.value_residual = true;
  GPT m(c, Device::CPU);
  m.init(7);
  for (Param& p : m.params().all())
    if (p.spec.name.find("proj.weight") != std::string::npos && p.spec.name.find("blocks.") == 0)
      ops::fill_uniform(p.value, 9, 1000, -0.1f, 0.1f);
  m.params().sync_compute();
  const Tensor ids = ids_with_bos(70), targets = random_ids(2, 8, 32, 71);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(ids, targets, 1.f, arena, loss_sum);
  for (const char* name : {"blocks.1.attn.attn_gate_w", "ve_shared.proj.weight", "bigram.embed.weight",
                           "blocks.2.attn.vrl_alpha"}) {
    double s = 0;
    for (float v : m.params().get(name).grad.to_float_vector()) s += std::fabs(v);
    EXPECT_GT(s, 0) << name;
  }
}

TEST(RecordSwitches, OptimizerStepsEveryNewParameter) {
  // The optimizer groups of the new tensors (Muon projections, AdamEmbed tables, Adam scalars and
  // gates) take a step: every tensor that had a gradient moves, and stays finite.
  ModelConfig c = base4();
  c.attn_gate = "dense";
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  c.value_residual = true;
  GPT m(c, Device::CPU);
  randomize(m, 80);
  const Tensor ids = ids_with_bos(81), targets = random_ids(2, 8, 32, 82);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(ids, targets, 1.f / 16.f, arena, loss_sum);
  std::vector<std::vector<float>> before;
  for (const Param& p : m.params().all()) before.push_back(p.value.to_float_vector());
  train::OptimSection o;
  o.scalar_weight_decay = 0.02;
  o.embed_weight_decay = 0.085;
  train::Optimizer opt(m.params(), o, Device::CPU, DType::F32, nullptr);
  opt.step(0, 1.0);
  size_t k = 0;
  for (const Param& p : m.params().all()) {
    const auto after = p.value.to_float_vector();
    bool moved = false, finite = true;
    for (size_t i = 0; i < after.size(); ++i) {
      moved = moved || after[i] != before[k][i];
      finite = finite && std::isfinite(after[i]);
    }
    ++k;
    const bool extra = p.spec.name.find("bigram") != std::string::npos || p.spec.name.find("ve_") != std::string::npos ||
                       p.spec.name.find("attn_gate") != std::string::npos || p.spec.name.find("vrl") != std::string::npos;
    if (!extra) continue;
    EXPECT_TRUE(moved) << p.spec.name;
    EXPECT_TRUE(finite) << p.spec.name;
  }
}

TEST(RecordSwitches, SecondBatchParametersHaveTheSpecShapesAndInits) {
  ModelConfig c = base4();  // d 32, 4 heads / 2 KV heads of 8: kv_dim 16, vocab 32
  c.attn_gate = "sparse";
  c.value_residual = true;
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  GPT m(c, Device::CPU);
  m.init(1);
  const ParamTable& t = m.params();
  const Param& gate = t.get("blocks.0.attn.attn_gate_w");
  EXPECT_EQ(gate.spec.shape, (Shape{4, 12}));
  EXPECT_EQ(gate.spec.group, OptGroup::AdamScalar);
  EXPECT_EQ(gate.spec.quant, QuantRole::Gate);
  EXPECT_EQ(gate.value.to_float_vector(), std::vector<float>(48, 0.f));
  EXPECT_EQ(t.find("blocks.0.attn.vrl_alpha"), nullptr) << "layer 0 is the value source, it has no mix";
  EXPECT_EQ(t.get("blocks.3.attn.vrl_alpha").value.to_float_vector(), (std::vector<float>{-1.5f}));
  EXPECT_EQ(t.get("ve_shared.embed.weight").spec.shape, (Shape{32, 8}));
  EXPECT_EQ(t.get("ve_shared.embed.weight").spec.group, OptGroup::AdamEmbed);
  EXPECT_EQ(t.get("ve_shared.proj.weight").spec.shape, (Shape{16, 8}));
  EXPECT_EQ(t.get("ve_shared.proj.weight").spec.group, OptGroup::Muon);
  EXPECT_EQ(t.get("ve_shared.proj.weight").value.to_float_vector(), std::vector<float>(128, 0.f));
  EXPECT_FLOAT_EQ(t.get("ve_shared.scale").value.to_float_vector()[0], 0.1f);
  EXPECT_FLOAT_EQ(t.get("ve_layer_scales.1").value.to_float_vector()[0], 1.f);
  EXPECT_EQ(t.find("ve_layer_scales.2"), nullptr);
  EXPECT_EQ(t.get("bigram.embed.weight").spec.shape, (Shape{16, 8}));
  EXPECT_EQ(t.get("bigram.proj.weight").spec.shape, (Shape{32, 8}));
  EXPECT_EQ(t.get("bigram.proj.weight").spec.group, OptGroup::Muon);
  EXPECT_FLOAT_EQ(t.get("bigram.scale").value.to_float_vector()[0], 0.05f);
  c.attn_gate = "dense";
  GPT dense(c, Device::CPU);
  EXPECT_EQ(dense.params().get("blocks.2.attn.attn_gate_w").spec.shape, (Shape{4, 32}));
}

TEST(RecordSwitches, BigramBucketsFollowTheSpecHash) {
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 7, 0, 31, 9, 9}, Shape{2, 3});
  Tensor out = Tensor::zeros(Shape{2, 3}, DType::I32);
  ops::bigram_hash(ids, 3072, out);
  const auto* o = out.ptr<int32_t>();
  EXPECT_EQ(o[0], 3071);  // position 0 of each row: the last bucket
  EXPECT_EQ(o[3], 3071);
  EXPECT_EQ(o[1], ((36313 * 7) ^ (27191 * 5)) % 3071);
  EXPECT_EQ(o[2], ((36313 * 0) ^ (27191 * 7)) % 3071);
  EXPECT_EQ(o[5], ((36313 * 9) ^ (27191 * 9)) % 3071);
  EXPECT_THROW(ops::bigram_hash(ids, 1, out), Error);
}

std::string config_error(const ModelConfig& c) {
  try {
    check_model_config(c);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RecordSwitches, SecondBatchBadValuesFailClearly) {
  ModelConfig c = base4();
  c.attn_gate = "gated";
  EXPECT_NE(config_error(c).find("attn_gate 'gated'"), std::string::npos);
  c.attn_gate = "sparse";
  c.attn_gate_window = 33;
  EXPECT_NE(config_error(c).find("attn_gate_window"), std::string::npos);
  c.attn_gate_window = 12;
  c.attn_gate_scale = 0.f;
  EXPECT_NE(config_error(c).find("attn_gate_scale"), std::string::npos);
  c = base4();
  c.ve_dim = 8;
  EXPECT_NE(config_error(c).find("ve_layers is empty"), std::string::npos);
  c.ve_layers = "1,4";
  EXPECT_NE(config_error(c).find("ve_layers"), std::string::npos);
  c.ve_dim = 0;
  c.ve_layers = "1";
  EXPECT_NE(config_error(c).find("ve_dim = 0"), std::string::npos);
  c = base4();
  c.bigram_buckets = 1;
  EXPECT_NE(config_error(c).find("bigram_buckets"), std::string::npos);
  c.bigram_buckets = 16;
  c.bigram_dim = 0;
  EXPECT_NE(config_error(c).find("bigram_dim"), std::string::npos);
  c = base4();
  c.num_layers = 1;
  c.value_residual = true;
  EXPECT_NE(config_error(c).find("value_residual"), std::string::npos);
}

}  // namespace
}  // namespace pgolf::model

namespace pgolf::model {
namespace {

// §5.12 per-pass loop embeddings: one zero-init vector per pass of the loop segment, added to the residual at the
// start of each pass; the gradient of each vector is the column sum of the residual gradient at its pass.
TEST(LoopEmbeddings, GradientsMatchFiniteDifferencesLoopedAndPlain) {
  ModelConfig c = base4();
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 2;  // three passes: three vectors
  c.loop_embeddings = true;
  c.skip_gates = true;
  expect_gradients_match(c, 39);  // a new model loops
  GPT m(c, Device::CPU);
  const Param* e = m.params().find("loop_embeddings");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->spec.shape, (Shape{3, 32}));
  EXPECT_EQ(e->spec.init, InitKind::Zeros);
  EXPECT_EQ(e->spec.group, OptGroup::AdamScalar);
}

TEST(LoopEmbeddings, EachPassGetsItsOwnVector) {
  ModelConfig c = base4();
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 2;
  c.loop_embeddings = true;
  GPT m(c, Device::CPU);
  randomize(m, 40);
  const Tensor ids = random_ids(2, 8, 32, 41), targets = random_ids(2, 8, 32, 42);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  Tensor loss = Tensor::zeros(Shape{1}, DType::F32);
  m.params().zero_grads();
  m.forward_backward(ids, targets, 1.f / 16, arena, loss);
  const auto g = m.params().get("loop_embeddings").grad.to_float_vector();  // (3, 32)
  for (int pass = 0; pass < 3; ++pass) {
    double s = 0, diff = 0;
    for (int j = 0; j < 32; ++j) {
      s += std::fabs(g[static_cast<size_t>(pass * 32 + j)]);
      if (pass > 0) diff += std::fabs(g[static_cast<size_t>(pass * 32 + j)] - g[static_cast<size_t>(j)]);
    }
    EXPECT_GT(s, 0) << "pass " << pass;
    if (pass > 0) EXPECT_GT(diff, 0) << "pass " << pass << " has pass 0's gradient";
  }
  // Not looping: only the first vector is used.
  m.set_looping(false);
  m.params().zero_grads();
  m.forward_backward(ids, targets, 1.f / 16, arena, loss);
  const auto h = m.params().get("loop_embeddings").grad.to_float_vector();
  double first = 0, rest = 0;
  for (size_t i = 0; i < h.size(); ++i) (i < 32 ? first : rest) += std::fabs(h[i]);
  EXPECT_GT(first, 0);
  EXPECT_EQ(rest, 0);
}

TEST(LoopEmbeddings, NeedALoop) {
  ModelConfig c = base4();
  c.loop_embeddings = true;
  EXPECT_NE(config_error(c).find("loop_embeddings = true needs a loop"), std::string::npos);
}

}  // namespace
}  // namespace pgolf::model
