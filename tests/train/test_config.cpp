#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "train/config.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::train;

TEST(TrainConfig, DefaultsAreTheBaseline) {
  Config c;
  EXPECT_EQ(c.model.num_layers, 9);
  EXPECT_EQ(c.model.model_dim, 512);
  EXPECT_EQ(c.train.train_batch_tokens, 524288);
  EXPECT_EQ(c.train.warmdown_iters, 1200);
  EXPECT_DOUBLE_EQ(c.optim.matrix_lr, 0.04);
  EXPECT_DOUBLE_EQ(c.optim.tied_embed_lr, 0.05);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.95);
  EXPECT_EQ(c.train.seed, 1337u);
}

TEST(TrainConfig, ParsesSectionsAndWidensIntegers) {
  Config c = parse_config_text("[model]\nnum_layers = 4\nmlp_mult = 3\n[optim]\nnesterov = false\n[data]\ntrain = \"x/*.bin\"\n",
                               "t.toml");
  EXPECT_EQ(c.model.num_layers, 4);
  EXPECT_FLOAT_EQ(c.model.mlp_mult, 3.f);  // an integer literal is accepted for a float key
  EXPECT_FALSE(c.optim.nesterov);
  EXPECT_EQ(c.data.train, "x/*.bin");
  EXPECT_EQ(c.model.model_dim, 512);  // untouched keys keep defaults
}

TEST(TrainConfig, TypeErrorsNameKeyAndFile) {
  std::string e = error_of([] { parse_config_text("[train]\nseq_len = \"long\"\n", "bad.toml"); });
  EXPECT_NE(e.find("bad.toml"), std::string::npos) << e;
  EXPECT_NE(e.find("train.seq_len"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of([] { parse_config_text("[train\nseq_len = 3\n", "syntax.toml"); });
  EXPECT_NE(e.find("syntax.toml:1"), std::string::npos) << e;
}

TEST(TrainConfig, UnknownKeysSuggestClosest) {
  std::string e = error_of([] { parse_config_text("[optim]\nmatrx_lr = 0.1\n", "u.toml"); });
  EXPECT_NE(e.find("optim.matrx_lr"), std::string::npos) << e;
  EXPECT_NE(e.find("optim.matrix_lr"), std::string::npos) << e;
  // The right key in the wrong section is found too.
  Config c;
  e = error_of([&] { apply_override(c, "train.matrix_lr=0.1"); });
  EXPECT_NE(e.find("optim.matrix_lr"), std::string::npos) << e;
  e = error_of([] { parse_config_text("[modle]\nnum_layers = 3\n", "s.toml"); });
  EXPECT_NE(e.find("model.num_layers"), std::string::npos) << e;
}

TEST(TrainConfig, OverridesAreTyped) {
  Config c;
  apply_override(c, "train.iterations=50");
  apply_override(c, "optim.matrix_lr = 0.02");
  apply_override(c, "optim.nesterov=false");
  apply_override(c, "data.val=\"v/*.bin\"");
  apply_override(c, "train.train_batch_tokens=524_288");
  EXPECT_EQ(c.train.iterations, 50);
  EXPECT_DOUBLE_EQ(c.optim.matrix_lr, 0.02);
  EXPECT_FALSE(c.optim.nesterov);
  EXPECT_EQ(c.data.val, "v/*.bin");
  EXPECT_EQ(c.train.train_batch_tokens, 524288);
  std::string e = error_of([&] { apply_override(c, "train.iterations=lots"); });
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of([&] { apply_override(c, "train.iterations"); });
  EXPECT_NE(e.find("section.key=value"), std::string::npos) << e;
}

TEST(TrainConfig, ResolvedTomlRoundTrips) {
  Config c;
  apply_override(c, "optim.adam_eps=1e-10");
  apply_override(c, "train.max_wallclock_seconds=300");
  apply_override(c, "data.tokenizer=a \"quoted\" path");
  Config d = parse_config_text(to_toml(c), "resolved");
  EXPECT_EQ(to_toml(c), to_toml(d));
  EXPECT_DOUBLE_EQ(d.optim.adam_eps, 1e-10);
  EXPECT_EQ(d.data.tokenizer, "a \"quoted\" path");
}

TEST(TrainConfig, ShippedConfigsParseAndMatchDefaults) {
  const std::string root = PGOLF_SOURCE_DIR;
  Config base = load_config_file(root + "/configs/baseline.toml");
  Config def;
  def.data = base.data;      // paths are the only intended differences
  def.output = base.output;
  EXPECT_EQ(to_toml(base), to_toml(def));
  for (const char* f : {"/configs/baseline-300s.toml", "/configs/tiny-cpu.toml", "/configs/default-gpu.toml"}) {
    Config c = load_config_file(root + f);
    EXPECT_NO_THROW(validate(c)) << f;
  }
}

TEST(TrainConfig, ValidateCatchesBadGeometry) {
  Config c;
  c.train.train_batch_tokens = 1000;
  std::string e = error_of([&] { validate(c); });
  EXPECT_NE(e.find("divisible"), std::string::npos) << e;
  c = Config{};
  c.train.lr_schedule = "cosine";
  EXPECT_THROW(validate(c), Error);
}

TEST(TrainConfig, EditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("same", "same"), 0u);
}
