// The record-stack switches of the GPT (TECHNIQUES.md §5): virtual layer lists, the record
// preset's parameter count, whole-model gradients with the switches on, and clear errors for bad
// settings (test_record_switches.cpp covers XSA, SmearGate, two-lane and document isolation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "model/gpt.h"
#include "model_test_util.h"
#include "train/config.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

// 4 physical layers, loop [1, 2] run twice: virtual list 0,1,2,1,2,3 (3 encoder + 3 decoder slots).
ModelConfig record_tiny() {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.rope_dims = 4;  // of head_dim 8
  c.activation = "leaky_relu2";
  c.mlp_mult = 1.5f;  // hidden 48
  c.qk_gain_init = 5.25f;
  c.ln_scale = true;
  c.skip_gates = true;
  c.parallel_residual = "gptj";
  c.parallel_start = 2;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 1;
  c.loop_enable_frac = 0.35f;
  return c;
}

std::string error_of(const ModelConfig& c) {
  try {
    GPT m(c, Device::CPU);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RecordModel, VirtualLayerListsFollowTheSpec) {
  ModelConfig c;
  c.num_layers = 11;
  c.loop_start = 3;
  c.loop_end = 5;
  c.loop_passes = 2;
  EXPECT_EQ(layer_schedule(c, true), (std::vector<int>{0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(layer_schedule(c, false), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  c.loop_start = 4;
  EXPECT_EQ(layer_schedule(c, true), (std::vector<int>{0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 6, 7, 8, 9, 10}));
  c.loop_passes = 0;  // no loop configured: looping is a no-op
  EXPECT_EQ(layer_schedule(c, true).size(), 11u);
}

TEST(RecordModel, LayerSetsParseAndRejectGarbage) {
  EXPECT_EQ(parse_layer_set("", 3, "k"), (std::vector<bool>{false, false, false}));
  EXPECT_EQ(parse_layer_set("all", 3, "k"), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(parse_layer_set("0,2", 3, "k"), (std::vector<bool>{true, false, true}));
  EXPECT_THROW(parse_layer_set("0,3", 3, "k"), Error);
  EXPECT_THROW(parse_layer_set("1,x", 3, "k"), Error);
  EXPECT_THROW(parse_layer_set("1,", 3, "k"), Error);
}

TEST(RecordModel, LoopingSwitchesOnAtTheConfiguredFraction) {
  GPT m(record_tiny(), Device::CPU);
  EXPECT_TRUE(m.looping()) << "a new model is in its trained (looped) state, for evaluation";
  m.set_training_fraction(0.0);
  EXPECT_FALSE(m.looping());
  EXPECT_EQ(m.num_encoder_layers(), 2);
  m.set_training_fraction(0.34);
  EXPECT_FALSE(m.looping());
  m.set_training_fraction(0.35);
  EXPECT_TRUE(m.looping());
  EXPECT_EQ(m.num_encoder_layers(), 3);
  EXPECT_EQ(m.num_skip_weights(), 3);
  EXPECT_EQ(m.params().get("skip_gates").spec.shape, (Shape{3, 32}));
  ModelConfig plain = tiny_config();
  GPT b(plain, Device::CPU);
  EXPECT_THROW(b.set_looping(true), Error);
}

TEST(RecordModel, BadSwitchesFailClearly) {
  ModelConfig c = record_tiny();
  c.xsa_layers = "all,";
  EXPECT_NE(error_of(c).find("xsa_layers"), std::string::npos);
  c = record_tiny();
  c.doc_isolated = true;
  c.bos_id = 99;
  EXPECT_NE(error_of(c).find("bos_id"), std::string::npos);
  c = record_tiny();
  c.smear_gate = "v3";
  EXPECT_NE(error_of(c).find("smear_gate"), std::string::npos);
  c = record_tiny();
  c.parallel_residual = "three_lane";
  EXPECT_NE(error_of(c).find("parallel_residual"), std::string::npos);
  c = record_tiny();
  c.loop_end = 7;
  EXPECT_NE(error_of(c).find("loop segment"), std::string::npos);
  c = record_tiny();
  c.parallel_residual = "gpt-j";
  EXPECT_NE(error_of(c).find("parallel_residual"), std::string::npos);
}

TEST(RecordModel, RecordPresetHas35_9MParameters) {
  const char* root = std::getenv("PGOLF_SOURCE_DIR");
  const std::string dir = root != nullptr ? root : PGOLF_SOURCE_DIR;
  const train::Config cfg = train::load_config_file(dir + "/configs/rec-2026-04-09.toml");
  const ParamTable t = GPT::describe(cfg.model);  // specs only: nothing allocated
  // 8192x512 tied embedding + 11 x (q 512^2, k/v 2 x 256x512, o 512^2, MLP 2 x 2048x512)
  // + 11 x (q_gain 8, attn/mlp scales 2 x 512, resid_mix 2x512) + 8 skip vectors and 8 skip gates.
  const int64_t matrices = 8192LL * 512 + 11LL * (2 * 512 * 512 + 2 * 256 * 512 + 2 * 2048 * 512);
  const int64_t controls = 11LL * (8 + 2 * 512 + 2 * 512) + 2LL * 8 * 512;
  EXPECT_EQ(t.count_elements(), matrices + controls);
  EXPECT_NEAR(static_cast<double>(t.count_elements()) / 1e6, 35.9, 0.05);
  EXPECT_EQ(t.get("skip_weights").spec.shape, (Shape{8, 512}));
  EXPECT_EQ(layer_schedule(cfg.model, true).size(), 17u);
}

using Batch = testing::LossBatch;
using testing::mean_loss;

int check_gradients(GPT& m, const Batch& b, int* checked) {
  return testing::check_gradients_fd(m, b, checked, 1e-2f, /*five_point=*/false);
}

TEST(RecordModel, LoopedGatedParallelModelMatchesFiniteDifferences) {
  GPT m(record_tiny(), Device::CPU);
  m.set_looping(true);
  randomize(m, 21);
  const Batch b{random_ids(2, 8, 32, 4), random_ids(2, 8, 32, 5)};
  int checked = 0;
  EXPECT_EQ(check_gradients(m, b, &checked), 0) << "of " << checked;
  EXPECT_GT(checked, 60);
  // Every parameter is live in the looped graph (all skip slots are used).
  for (const Param& p : m.params().all()) {
    double s = 0;
    for (float v : p.grad.to_float_vector()) s += std::fabs(v);
    EXPECT_GT(s, 0) << p.spec.name;
  }
}

TEST(RecordModel, UnloopedModelMatchesFiniteDifferences) {
  ModelConfig c = record_tiny();
  c.parallel_start = 0;  // every block in GPT-J form
  GPT m(c, Device::CPU);
  m.set_looping(false);
  randomize(m, 22);
  const Batch b{random_ids(2, 8, 32, 6), random_ids(2, 8, 32, 7)};
  int checked = 0;
  EXPECT_EQ(check_gradients(m, b, &checked), 0) << "of " << checked;
}

TEST(RecordModel, EachSwitchChangesTheFunction) {
  // Same weights, one switch flipped at a time: the loss must move (the switch is wired in).
  const Batch b{random_ids(2, 8, 32, 8), random_ids(2, 8, 32, 9)};
  Arena arena(Device::CPU);
  arena.reserve(64 << 20);
  auto loss_with = [&](ModelConfig c) {
    GPT m(c, Device::CPU);
    randomize(m, 23);
    return mean_loss(m, b, arena);
  };
  ModelConfig base = tiny_config();
  base.num_layers = 4;
  const double l0 = loss_with(base);
  EXPECT_EQ(loss_with(base), l0);  // deterministic
  ModelConfig c = base;
  c.ln_scale = true;
  EXPECT_NE(loss_with(c), l0);
  c = base;
  c.parallel_residual = "gptj";
  EXPECT_NE(loss_with(c), l0);
  c.parallel_start = 4;  // no layer at or past the start: the sequential model
  EXPECT_EQ(loss_with(c), l0);
  c = base;
  c.rope_dims = 4;
  EXPECT_NE(loss_with(c), l0);
  c = base;
  c.activation = "leaky_relu2";
  EXPECT_NE(loss_with(c), l0);
}

TEST(RecordModel, PlanCoversBothGraphs) {
  GPT m(record_tiny(), Device::CPU);
  randomize(m, 24);
  m.set_looping(false);
  const size_t plan = m.plan_bytes(2, 8);
  EXPECT_FALSE(m.looping()) << "plan_bytes must restore the looping state";
  Arena arena(Device::CPU);
  arena.reserve(plan);
  const Batch b{random_ids(2, 8, 32, 10), random_ids(2, 8, 32, 11)};
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(b.ids, b.targets, 1.f, arena, loss_sum);
  m.set_looping(true);
  m.forward_backward(b.ids, b.targets, 1.f, arena, loss_sum);
  EXPECT_LE(arena.peak(), plan);
}

}  // namespace
}  // namespace pgolf::model
