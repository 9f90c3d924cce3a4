// Progressive loop activation (TECHNIQUES.md §5.12, R:2026-04-06 "first extra pass at 50 %, second at 65 %"):
// model.loop_pass_fracs switches the extra passes of the loop segment on one by one. The virtual layer list and
// its U-Net split at each stage, the pass count at each training fraction, the configuration errors, and the
// gradients of an intermediate stage (with per-pass loop embeddings) against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/gpt.h"
#include "model_test_util.h"
#include "train/config.h"
#include "test_util.h"

namespace pgolf::model {
namespace {

using pgolf::test::error_of;
using testing::check_gradients_fd;
using testing::LossBatch;
using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

// The 3-layer loop of the records (§5.12): layers 3..5 of 11, two extra passes.
ModelConfig record_loop() {
  ModelConfig c;
  c.num_layers = 11;
  c.loop_start = 3;
  c.loop_end = 5;
  c.loop_passes = 2;
  c.loop_pass_fracs = "0.5,0.65";
  return c;
}

TEST(LoopProgressive, VirtualLayerListsAtEachStage) {
  const ModelConfig c = record_loop();
  EXPECT_EQ(layer_schedule_passes(c, 0), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(layer_schedule_passes(c, 1), (std::vector<int>{0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(layer_schedule_passes(c, 2), (std::vector<int>{0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(layer_schedule_passes(c, 2), layer_schedule(c, true));
  EXPECT_EQ(layer_schedule_passes(c, 0), layer_schedule(c, false));
  EXPECT_THROW(layer_schedule_passes(c, 3), Error);

  GPT m(c, Device::CPU);
  EXPECT_EQ(m.loop_passes_on(), 2) << "a new model runs every pass (its trained state)";
  m.set_training_fraction(0.0);
  EXPECT_EQ(m.loop_passes_on(), 0);
  EXPECT_FALSE(m.looping());
  EXPECT_EQ(m.num_encoder_layers(), 5);
  EXPECT_EQ(m.num_decoder_layers(), 6);
  m.set_training_fraction(0.4999);
  EXPECT_EQ(m.loop_passes_on(), 0);
  m.set_training_fraction(0.5);
  EXPECT_EQ(m.loop_passes_on(), 1);
  EXPECT_TRUE(m.looping());
  EXPECT_EQ(m.schedule().size(), 14u);
  EXPECT_EQ(m.num_encoder_layers(), 7);  // enc [0..5, 3], dec [4, 5, 6..10]
  EXPECT_EQ(m.num_decoder_layers(), 7);
  m.set_training_fraction(0.64);
  EXPECT_EQ(m.loop_passes_on(), 1);
  m.set_training_fraction(0.65);
  EXPECT_EQ(m.loop_passes_on(), 2);
  EXPECT_EQ(m.schedule().size(), 17u);
  EXPECT_EQ(m.num_encoder_layers(), 8);
  EXPECT_EQ(m.num_decoder_layers(), 9);
  m.set_training_fraction(1.0);
  EXPECT_EQ(m.loop_passes_on(), 2);
  // Skip vectors are sized for the longest list; the shorter lists use the first ones.
  EXPECT_EQ(m.num_skip_weights(), 8);
  m.set_loop_passes(1);
  EXPECT_EQ(m.schedule().size(), 14u);
  m.set_looping(false);
  EXPECT_EQ(m.loop_passes_on(), 0);
  m.set_looping(true);
  EXPECT_EQ(m.loop_passes_on(), 2);
  EXPECT_THROW(m.set_loop_passes(3), Error);
  EXPECT_THROW(m.set_loop_passes(-1), Error);
}

TEST(LoopProgressive, PassesAtFractions) {
  ModelConfig c = record_loop();
  EXPECT_EQ(loop_passes_at(c, 0.0), 0);
  EXPECT_EQ(loop_passes_at(c, 0.5), 1);
  EXPECT_EQ(loop_passes_at(c, 0.65), 2);
  // Equal fractions switch both passes together: the same as loop_enable_frac.
  c.loop_pass_fracs = "0.35, 0.35";
  EXPECT_EQ(loop_passes_at(c, 0.34), 0);
  EXPECT_EQ(loop_passes_at(c, 0.35), 2);
  // Without the list, loop_enable_frac switches every pass (the existing behaviour).
  c.loop_pass_fracs = "";
  c.loop_enable_frac = 0.35f;
  EXPECT_EQ(loop_passes_at(c, 0.3), 0);
  EXPECT_EQ(loop_passes_at(c, 0.35), 2);
  // No loop: never any pass.
  ModelConfig plain;
  EXPECT_EQ(loop_passes_at(plain, 1.0), 0);
}

TEST(LoopProgressive, BadListsFailNamingTheKey) {
  ModelConfig c = record_loop();
  EXPECT_NO_THROW(check_model_config(c));
  auto err = [&](const std::string& fracs) {
    ModelConfig b = c;
    b.loop_pass_fracs = fracs;
    return error_of([&] { check_model_config(b); });
  };
  EXPECT_NE(err("0.5").find("one per extra pass"), std::string::npos);
  EXPECT_NE(err("0.5,0.65,0.8").find("one per extra pass"), std::string::npos);
  EXPECT_NE(err("0.65,0.5").find("non-decreasing"), std::string::npos);
  EXPECT_NE(err("0.5,1.5").find("outside [0, 1]"), std::string::npos);
  EXPECT_NE(err("0.5,x").find("not a number"), std::string::npos);
  EXPECT_NE(err("0.5,").find("not a number"), std::string::npos);
  ModelConfig noloop;
  noloop.loop_pass_fracs = "0.5";
  EXPECT_NE(error_of([&] { check_model_config(noloop); }).find("needs a loop"), std::string::npos);
  // The TOML key.
  train::Config cfg;
  train::apply_override(cfg, "model.loop_pass_fracs=0.5,0.65");
  EXPECT_EQ(cfg.model.loop_pass_fracs, "0.5,0.65");
}

// The plan covers the full loop whatever the stage, and measuring restores the stage.
TEST(LoopProgressive, PlanIsTheFullLoopsAndKeepsTheStage) {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 2;
  c.loop_pass_fracs = "0.3,0.6";
  GPT m(c, Device::CPU);
  const size_t full = m.plan_bytes(2, 8);
  m.set_loop_passes(1);
  EXPECT_EQ(m.plan_bytes(2, 8), full);
  EXPECT_EQ(m.loop_passes_on(), 1);
}

// An intermediate stage (one of two extra passes) with per-pass loop embeddings and skip gates: the
// gradients match finite differences, and loop embedding 2 (the pass not yet on) gets no gradient.
TEST(LoopProgressive, IntermediateStageGradientsMatchFiniteDifferences) {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.rope_dims = 4;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 2;
  c.loop_pass_fracs = "0.3,0.6";
  c.loop_embeddings = true;
  c.skip_gates = true;
  GPT m(c, Device::CPU);
  randomize(m, 81);
  m.set_training_fraction(0.4);
  ASSERT_EQ(m.loop_passes_on(), 1);
  EXPECT_EQ(m.schedule(), (std::vector<int>{0, 1, 2, 1, 2, 3}));
  LossBatch b{random_ids(2, 8, 32, 82), random_ids(2, 8, 32, 83)};
  int checked = 0;
  EXPECT_EQ(check_gradients_fd(m, b, &checked, 1e-2f, true), 0);
  EXPECT_GT(checked, 0);
  const auto g = m.params().get("loop_embeddings").grad.to_float_vector();
  const size_t d = static_cast<size_t>(c.model_dim);
  ASSERT_EQ(g.size(), 3 * d);
  double used = 0, unused = 0;
  for (size_t i = 0; i < d; ++i) {
    used += std::fabs(g[d + i]);
    unused += std::fabs(g[2 * d + i]);
  }
  EXPECT_GT(used, 0.0);
  EXPECT_EQ(unused, 0.0);
}

}  // namespace
}  // namespace pgolf::model
