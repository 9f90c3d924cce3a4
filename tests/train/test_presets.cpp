// Every shipped preset (configs/*.toml) loads, validates (training config and model config) and, for
// the record presets, comments every setting with its TECHNIQUES.md section.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/gpt.h"
#include "train/config.h"

using namespace pgolf;
using namespace pgolf::train;
namespace fs = std::filesystem;

namespace {
std::vector<std::string> preset_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(std::string(PGOLF_SOURCE_DIR) + "/configs"))
    if (e.path().extension() == ".toml") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST(Presets, EveryConfigLoadsAndValidates) {
  const auto files = preset_files();
  ASSERT_GE(files.size(), 10u);
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    Config c;
    ASSERT_NO_THROW(c = load_config_file(f));
    EXPECT_NO_THROW(validate(c));
    model::ModelConfig m = c.model;
    m.act_dtype = DType::F32;
    EXPECT_NO_THROW(model::check_model_config(m));  // fails on switches not implemented yet
  }
}

TEST(Presets, RecordPresetsCommentEverySettingWithItsSection) {
  for (const char* name : {"pr1072", "pr1555", "pr1658", "pr1672", "pr915", "rec-2026-04-09", "top-2026-04-27"}) {
    const std::string path = std::string(PGOLF_SOURCE_DIR) + "/configs/" + name + ".toml";
    ASSERT_TRUE(fs::exists(path)) << path;
    std::ifstream in(path);
    int settings = 0;
    bool paths = false;  // [data] and [output] hold file paths, not techniques
    for (std::string line; std::getline(in, line);) {
      const auto start = line.find_first_not_of(' ');
      if (start == std::string::npos || line[start] == '#') continue;
      if (line[start] == '[') {
        paths = line.rfind("[data]", start) == start || line.rfind("[output]", start) == start;
        continue;
      }
      if (paths) continue;
      ++settings;
      const auto hash = line.find('#');
      const bool cites = hash != std::string::npos &&
                         (line.find("§", hash) != std::string::npos || line.find("table (", hash) != std::string::npos ||
                          line.find("ANCHORS", hash) != std::string::npos);
      EXPECT_TRUE(cites) << name << ": setting without a spec reference: " << line;
    }
    EXPECT_GT(settings, 20) << name;
  }
}

TEST(Presets, TopRecordValuesOfTableD2) {
  Config c = load_config_file(std::string(PGOLF_SOURCE_DIR) + "/configs/top-2026-04-27.toml");
  EXPECT_EQ(c.model.vocab_size, 8192);
  EXPECT_FLOAT_EQ(c.model.qk_gain_init, 5.0f);
  EXPECT_DOUBLE_EQ(c.train.warmdown_frac, 0.85);
  EXPECT_DOUBLE_EQ(c.train.min_lr, 0.10);
  EXPECT_DOUBLE_EQ(c.optim.matrix_lr, 0.026);
  EXPECT_EQ(c.optim.muon_coefficients, "polar_express");
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.99);
  EXPECT_DOUBLE_EQ(c.optim.scalar_weight_decay, 0.02);
  EXPECT_DOUBLE_EQ(c.optim.ema_decay, 0.9965);
  EXPECT_DOUBLE_EQ(c.optim.grad_clip_norm, 0.3);
}

namespace {
Config preset(const char* name) { return load_config_file(std::string(PGOLF_SOURCE_DIR) + "/configs/" + name + ".toml"); }

bool schema_has(const std::string& key) {
  const auto keys = known_keys();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}
}  // namespace

// Each record preset turns on exactly the §5 switches of its record (TECHNIQUES.md tables (a), (d2),
// ANCHORS §2), and no others.
TEST(Presets, RecordPresetsTurnOnTheirSwitches) {
  struct Want {
    const char* name;
    const char* xsa;
    const char* smear;
    const char* parallel;
    int parallel_start;
    bool doc_isolated;
  };
  for (const Want& w : {Want{"rec-2026-04-09", "all", "none", "gptj", 7, false},
                        Want{"pr1658", "all", "v2", "gptj", 7, false},
                        Want{"pr1555", "all", "none", "two_lane", 8, false},
                        Want{"top-2026-04-27", "all", "v2", "two_lane", 8, true},
                        Want{"pr1072", "all", "v1", "none", 0, false},
                        Want{"pr915", "7,8,9,10", "v1", "none", 0, false}}) {
    SCOPED_TRACE(w.name);
    const model::ModelConfig m = preset(w.name).model;
    EXPECT_EQ(m.xsa_layers, w.xsa);
    EXPECT_EQ(m.smear_gate, w.smear);
    EXPECT_EQ(m.smear_window, 12);
    EXPECT_EQ(m.parallel_residual, w.parallel);
    if (m.parallel_residual != "none") {
      EXPECT_EQ(m.parallel_start, w.parallel_start);
    }
    EXPECT_EQ(m.doc_isolated, w.doc_isolated);
  }
}

// The second batch of switches (§5.9-§5.11, §5.14): the [model] schema knows their keys and the presets set them.
TEST(Presets, RecordPresetsTurnOnTheSecondBatchSwitches) {
  for (const char* key : {"model.smear_window", "model.attn_gate", "model.attn_gate_window", "model.attn_gate_scale",
                          "model.value_residual", "model.vrl_init", "model.ve_dim", "model.ve_layers",
                          "model.bigram_buckets", "model.bigram_dim"})
    ASSERT_TRUE(schema_has(key)) << "config schema has no key " << key;
  struct Want {
    const char* name;
    const char* gate;
    bool vrl;
    int ve_dim;
    const char* ve_layers;
    int bigram_buckets;
  };
  for (const Want& w : {Want{"rec-2026-04-09", "none", false, 0, "", 0}, Want{"pr1658", "none", false, 0, "", 0},
                        Want{"pr1555", "none", false, 0, "", 0}, Want{"top-2026-04-27", "sparse", false, 0, "", 0},
                        Want{"pr1072", "none", false, 128, "9,10", 4096},
                        Want{"pr915", "none", true, 128, "9,10", 2048}}) {
    SCOPED_TRACE(w.name);
    const model::ModelConfig m = preset(w.name).model;
    EXPECT_EQ(m.attn_gate, w.gate);
    EXPECT_EQ(m.value_residual, w.vrl);
    EXPECT_EQ(m.ve_dim, w.ve_dim);
    EXPECT_EQ(m.ve_layers, w.ve_layers);
    EXPECT_EQ(m.bigram_buckets, w.bigram_buckets);
    if (m.bigram_buckets > 0) {
      EXPECT_EQ(m.bigram_dim, 128);
    }
    if (m.attn_gate == "sparse") {
      EXPECT_EQ(m.attn_gate_window, 12);
      EXPECT_FLOAT_EQ(m.attn_gate_scale, 0.5f);
    }
    if (m.value_residual) {
      EXPECT_FLOAT_EQ(m.vrl_init, -1.5f);
    }
  }
  // The parameters these switches add to the 11-layer models (d 512, kv_dim 256, SP1024 vocab 1024).
  const int64_t plain915 = [] {
    model::ModelConfig m = preset("pr915").model;
    m.value_residual = false;
    m.ve_dim = 0;
    m.ve_layers = "";
    m.bigram_buckets = 0;
    return model::GPT::describe(m).count_elements();
  }();
  const int64_t vrl = 10, ve = 1024LL * 128 + 256LL * 128 + 1 + 2, bigram = 2048LL * 128 + 512LL * 128 + 1;
  EXPECT_EQ(model::GPT::describe(preset("pr915").model).count_elements(), plain915 + vrl + ve + bigram);
}
