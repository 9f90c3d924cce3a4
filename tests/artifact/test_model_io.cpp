// Model <-> artifact: config JSON, pack -> file -> load round trip, corrupted files, the budget,
// loading a run directory (final weights or checkpoint).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "../model/model_test_util.h"
#include "artifact/model_io.h"
#include "artifact/pack_model.h"
#include "artifact/reader.h"
#include "artifact/writer.h"
#include "data/file_util.h"
#include "model/safetensors.h"
#include "quant/calibrate.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace pgolf::artifact {
namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("pgolf_model_io_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

SolverOptions quick_solver() {
  SolverOptions s;
  s.compressors = {Compressor::Zlib9};
  s.shuffle_strides = {1};
  s.orders = {LayoutOrder::Given};
  s.transposed_codes = {false};
  s.threads = 1;
  return s;
}

// Next-token loss on random targets: predicting `ids` themselves is nearly free for a tied-embedding
// model (loss ~1e-4), which would make a relative comparison meaningless.
double mean_loss(model::GPT& gpt, const Tensor& ids) {
  const Tensor targets = model::testing::random_ids(ids.dim(0), ids.dim(1), gpt.config().vocab_size, 1234);
  Arena arena(Device::CPU);
  arena.reserve(gpt.plan_bytes(ids.dim(0), ids.dim(1), false));
  Tensor losses = Tensor::empty(Shape{ids.numel()}, DType::F32);
  gpt.forward_losses(ids, targets, arena, losses);
  double s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s / static_cast<double>(ids.numel());
}

struct Packed {
  std::unique_ptr<model::GPT> gpt;
  PackModelResult result;
};

Packed pack_tiny(bool with_hessians, uint64_t limit = kCountedByteLimit, bool allow_over = false) {
  Packed p;
  p.gpt = std::make_unique<model::GPT>(model::testing::tiny_config(), Device::CPU);
  model::testing::randomize(*p.gpt, 5);
  std::map<std::string, quant::LinearHessian> hs;
  if (with_hessians) {
    quant::HessianCollector col(quant::GramPath::Host);
    for (uint64_t seed : {1u, 2u}) {
      col.begin_pass();
      Arena arena(Device::CPU);
      arena.reserve(p.gpt->plan_bytes(2, 8, false));
      Tensor losses = Tensor::empty(Shape{16}, DType::F32);
      const Tensor ids = model::testing::random_ids(2, 8, p.gpt->config().vocab_size, seed);
      p.gpt->forward_losses(ids, ids, arena, losses);
    }
    hs = col.finish();
  }
  PackModelOptions opt;
  opt.solver = quick_solver();
  opt.counted_limit = limit;
  opt.code_bytes = 100;
  opt.allow_over = allow_over;
  p.result = pack_model(*p.gpt, hs, opt);
  return p;
}

TEST(ModelConfigJson, RoundTripsEveryField) {
  model::ModelConfig c = model::testing::tiny_config();
  c.activation = "leaky_relu2";
  c.leaky_slope = 0.3f;
  c.rope_dims = 4;
  c.logit_softcap = 15.5f;
  c.norm_eps = 1e-6f;
  const model::ModelConfig back = model_config_from_json(model_config_to_json(c), "t");
  EXPECT_EQ(model_config_to_json(back), model_config_to_json(c));
  EXPECT_EQ(back.vocab_size, c.vocab_size);
  EXPECT_EQ(back.activation, "leaky_relu2");
  EXPECT_EQ(back.leaky_slope, 0.3f);
  EXPECT_EQ(back.norm_eps, 1e-6f);
}

TEST(ModelConfigJson, RejectsUnknownKeysAndUnrunnableConfigs) {
  EXPECT_THROW(model_config_from_json("", "t"), Error);
  EXPECT_THROW(model_config_from_json("{not json", "t"), Error);
  EXPECT_THROW(model_config_from_json(R"({"arch":"other","config_version":1,"model":{}})", "t"), Error);
  EXPECT_THROW(model_config_from_json(R"({"arch":"pgolf-gpt","config_version":2,"model":{}})", "t"), Error);
  try {
    model_config_from_json(R"({"arch":"pgolf-gpt","config_version":1,"model":{"future_switch":4}})", "t");
    FAIL() << "unknown key accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("future_switch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model_config_from_json(R"({"arch":"pgolf-gpt","config_version":1,"model":{"model_dim":30}})", "t"),
               Error);  // 30 is not a multiple of 8 heads
  EXPECT_THROW(model_config_from_json(R"({"arch":"pgolf-gpt","config_version":1,"model":{"activation":"gelu"}})", "t"),
               Error);
  EXPECT_THROW(model_config_from_json(R"({"arch":"pgolf-gpt","config_version":1,"model":{"num_layers":"x"}})", "t"),
               Error);
}

TEST(ModelIo, PackedArtifactLoadsBackExactlyAndScoresClose) {
  Packed p = pack_tiny(/*with_hessians=*/true);
  ASSERT_TRUE(p.result.budget.reached);
  const std::string dir = temp_dir("roundtrip");
  const std::string path = dir + "/m.pgolf";
  write_file_atomic(path, p.result.budget.bytes);
  auto loaded = load_model_from_artifact(path, Device::CPU);
  const Artifact back = read_artifact_file(path);
  int int_rows = 0;
  for (const auto& prm : loaded->params().all()) {
    const StoredTensor& t = back.get(prm.spec.name);
    int_rows += t.kind == StorageKind::IntRow;
    EXPECT_EQ(prm.value.to_float_vector(), dequantize(t)) << prm.spec.name;  // bit-exact
  }
  EXPECT_GT(int_rows, 0);
  // Every GPTQ matrix used its Hessian; the proxy error is reported for them.
  for (const auto& s : p.result.tensors)
    if (s.role == "attn_q" || s.role == "mlp_up") {
      EXPECT_TRUE(s.hessian) << s.name;
      EXPECT_GE(s.rel_proxy, 0) << s.name;
      EXPECT_LT(s.rel_error, 0.3) << s.name;
    }
  const Tensor ids = model::testing::random_ids(2, 8, 32, 99);
  const double want = mean_loss(*p.gpt, ids), got = mean_loss(*loaded, ids);
  EXPECT_NEAR(got, want, 0.05 * std::abs(want));
  fs::remove_all(dir);
}

TEST(ModelIo, CorruptedOrTruncatedArtifactIsAClearError) {
  Packed p = pack_tiny(false);
  const std::string dir = temp_dir("corrupt");
  std::vector<uint8_t> bytes = p.result.budget.bytes;
  bytes[bytes.size() - 10] ^= 0x5a;
  write_file_atomic(dir + "/flip.pgolf", bytes);
  EXPECT_THROW(load_model_from_artifact(dir + "/flip.pgolf", Device::CPU), Error);
  std::vector<uint8_t> cut(p.result.budget.bytes.begin(), p.result.budget.bytes.end() - 7);
  write_file_atomic(dir + "/cut.pgolf", cut);
  try {
    load_model_from_artifact(dir + "/cut.pgolf", Device::CPU);
    FAIL() << "truncated artifact accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut.pgolf"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(ModelIo, MissingExtraOrMisShapedTensorsAreErrors) {
  Packed p = pack_tiny(false);
  Artifact a = p.result.artifact;
  {
    Artifact m = a;
    m.tensors.erase(m.tensors.begin() + 1);
    EXPECT_THROW(model_from_artifact(m, Device::CPU, "m"), Error);
  }
  {
    Artifact m = a;
    m.tensors.push_back(StoredTensor::make_f32("blocks.9.extra", {2}, {1.f, 2.f}));
    EXPECT_THROW(model_from_artifact(m, Device::CPU, "m"), Error);
  }
  {
    Artifact m = a;
    for (auto& t : m.tensors)
      if (t.name == "blocks.0.attn_scale") t = StoredTensor::make_f32(t.name, {2, 16}, std::vector<float>(32, 1.f));
    EXPECT_THROW(model_from_artifact(m, Device::CPU, "m"), Error);
  }
  EXPECT_NO_THROW(model_from_artifact(a, Device::CPU, "a"));
}

TEST(ModelIo, OverBudgetIsRefusedUnlessAllowed) {
  EXPECT_THROW(pack_tiny(false, /*limit=*/1200), Error);
  Packed p = pack_tiny(false, 1200, /*allow_over=*/true);
  EXPECT_FALSE(p.result.budget.reached);
  EXPECT_GT(p.result.artifact_bytes() + 100, 1200u);
}

train::Config tiny_run_config() {
  train::Config cfg;
  cfg.model = model::testing::tiny_config();
  cfg.model_compute_dtype = "f32";
  return cfg;
}

TEST(ModelIo, LoadsRunFromFinalWeightsOrCheckpoint) {
  const std::string dir = temp_dir("run");
  const train::Config cfg = tiny_run_config();
  data::write_file_atomic(train::config_path(dir), train::to_toml(cfg));
  EXPECT_THROW(load_model_from_run(dir, Device::CPU), Error);  // no weights yet

  model::GPT ref(cfg.model, Device::CPU);
  model::testing::randomize(ref, 21);
  {  // checkpoint: parameters + optimizer state
    model::GPT host(cfg.model, Device::CPU);
    for (size_t i = 0; i < ref.params().all().size(); ++i)
      host.params().all()[i].value.copy_from(ref.params().all()[i].value);
    train::Optimizer opt(host.params(), cfg.optim, Device::CPU, DType::F32);
    train::NamedTensors t;
    for (auto& prm : host.params().all()) t.emplace_back("param." + prm.spec.name, prm.value);
    for (auto& s : opt.state_tensors()) t.push_back(s);
    train::save_checkpoint(train::checkpoint_path(dir), train::TrainState{}, t);
  }
  auto from_ckpt = load_model_from_run(dir, Device::CPU);
  for (size_t i = 0; i < ref.params().all().size(); ++i)
    EXPECT_EQ(from_ckpt->params().all()[i].value.to_float_vector(), ref.params().all()[i].value.to_float_vector());

  model::GPT other(cfg.model, Device::CPU);
  model::testing::randomize(other, 22);
  model::export_params(other.params(), final_weights_path(dir));  // preferred over the checkpoint
  auto from_final = load_model_from_run(dir, Device::CPU);
  for (size_t i = 0; i < other.params().all().size(); ++i)
    EXPECT_EQ(from_final->params().all()[i].value.to_float_vector(), other.params().all()[i].value.to_float_vector());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pgolf::artifact
