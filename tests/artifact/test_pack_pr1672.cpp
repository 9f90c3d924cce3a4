// The pr1672 pack preset (seed #1672, the GatedDeltaNet hybrid; TECHNIQUES.md §7.5, §7.6, §7.12, table (a)):
// a tiny GDN hybrid packed through pack_model with the preset's policy and solver — every GDN matrix int6
// GPTQ with the percentile search, the small GDN tensors fp16, brotli-11 sections in size-descending
// order, the file loads back bit-exactly and scores close — and the full-size parameter set's size.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "../model/model_test_util.h"
#include "artifact/model_io.h"
#include "artifact/pack_model.h"
#include "artifact/pack_preset.h"
#include "artifact/pack_tensor.h"
#include "artifact/reader.h"
#include "artifact/writer.h"
#include "core/dtype.h"
#include "model/gpt.h"
#include "quant/calibrate.h"
#include "train/config.h"

namespace pgolf::artifact {
namespace {

namespace fs = std::filesystem;

bool is_gdn(const std::string& name) { return name.find(".gdn.") != std::string::npos; }
bool is_gdn_matrix(const model::Param& p) { return is_gdn(p.spec.name) && p.spec.group == model::OptGroup::Muon; }

// tests/model/test_gdn_layer.cpp's hybrid_tiny: GDN, attention, GDN, shared attention; d 32, 4 heads of 8.
model::ModelConfig hybrid_tiny() {
  model::ModelConfig c = model::testing::tiny_config();
  c.num_layers = 4;
  c.gdn_layers = "0,2";
  c.share_attention = true;
  c.unet = false;
  c.smear_gate = "v1";
  c.gdn_chunk = 4;
  c.qk_gain_init = 5.f;
  return c;
}

// Next-token loss on random targets (predicting the ids themselves is nearly free with a tied embedding).
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

std::string source_dir() {
  const char* root = std::getenv("PGOLF_SOURCE_DIR");
  return root != nullptr ? root : PGOLF_SOURCE_DIR;
}

}  // namespace

TEST(PackPr1672, PresetIsTheSeedRecipe) {
  const PackPreset p = pack_preset("pr1672");
  EXPECT_EQ(p.name, "pr1672");
  for (const quant::RolePolicy& r : {p.policy.attn, p.policy.mlp, p.policy.gate}) {
    EXPECT_EQ(r.method, quant::QuantMethod::Gptq);
    EXPECT_EQ(r.bits, 6);
  }
  EXPECT_EQ(p.policy.embed.method, quant::QuantMethod::Gptq);
  EXPECT_EQ(p.policy.embed.bits, 8);
  EXPECT_EQ(p.policy.passthrough.method, quant::QuantMethod::F16);
  EXPECT_EQ(p.policy.clip_search.mode, quant::ClipSearchMode::Matrix);  // table (a): percentile clip search
  EXPECT_FALSE(p.policy.clip_search.rate_constrained);
  EXPECT_FALSE(p.lqer);
  const SolverOptions s = preset_solver(p);
  EXPECT_EQ(s.compressors, std::vector<Compressor>{Compressor::Brotli11});
  EXPECT_EQ(s.orders, std::vector<LayoutOrder>{LayoutOrder::SizeDescending});
  // Presets without an order list keep the solver's full search.
  EXPECT_EQ(preset_solver(pack_preset("rec-2026-04-09")).orders.size(), SolverOptions{}.orders.size());
}

TEST(PackPr1672, TinyGdnHybridPacksLoadsAndScoresClose) {
  model::GPT gpt(hybrid_tiny(), Device::CPU);
  model::testing::randomize(gpt, 11);
  // Calibration the way collect_hessians does it: forward passes under the linear-input hook.
  quant::HessianCollector col(quant::GramPath::Host);
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    col.begin_pass();
    Arena arena(Device::CPU);
    arena.reserve(gpt.plan_bytes(2, 16, false));
    Tensor losses = Tensor::empty(Shape{32}, DType::F32);
    const Tensor ids = model::testing::random_ids(2, 16, gpt.config().vocab_size, seed);
    gpt.forward_losses(ids, ids, arena, losses);
  }
  const std::map<std::string, quant::LinearHessian> hs = col.finish();

  const PackPreset preset = pack_preset("pr1672");
  PackModelOptions opt;
  opt.policy = preset.policy;
  opt.solver = preset_solver(preset);
  opt.solver.threads = 1;
  opt.code_bytes = 100;
  const PackModelResult r = pack_model(gpt, hs, opt);
  ASSERT_TRUE(r.budget.reached);
  EXPECT_EQ(r.budget.prune.pruned, 0u) << "a tiny model is far under the limit";

  const fs::path dir = fs::temp_directory_path() / ("pgolf_pack_pr1672_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "m.pgolf").string();
  write_file_atomic(path, r.budget.bytes);
  ArtifactFileInfo info;
  const Artifact back = read_artifact_file(path, &info);
  ASSERT_FALSE(info.sections.empty());
  for (const SectionInfo& s : info.sections) {
    EXPECT_EQ(s.compressor, Compressor::Brotli11) << s.name;
    EXPECT_EQ(s.order, LayoutOrder::SizeDescending) << s.name;
  }

  // The tensor table: every GDN matrix (q, k, v, g, o and the a/b gate projections) int6 from GPTQ with
  // its Hessian — the stored codes are exactly pack_tensor's GPTQ + search result, which the RTN search
  // (the no-Hessian fallback) does not reproduce; the convs, A_log and dt_bias are fp16.
  quant::QuantPolicy rtn = preset.policy;
  rtn.attn.method = rtn.gate.method = quant::QuantMethod::Rtn;
  int gdn_matrices = 0, gdn_small = 0, gdn_differs_from_rtn = 0;
  for (const model::Param& p : gpt.params().all()) {
    if (!is_gdn(p.spec.name)) continue;
    const StoredTensor& t = back.get(p.spec.name);
    if (!is_gdn_matrix(p)) {
      ++gdn_small;
      EXPECT_EQ(t.kind, StorageKind::F16) << p.spec.name;
      continue;
    }
    ++gdn_matrices;
    ASSERT_EQ(t.kind, StorageKind::IntRow) << p.spec.name;
    EXPECT_EQ(t.q.bits, 6) << p.spec.name;
    const std::vector<int64_t> shape{p.spec.shape[0], p.spec.shape[1]};
    const std::vector<float> w = p.value.to_float_vector();
    const auto h = hs.find(p.spec.name);
    ASSERT_NE(h, hs.end()) << p.spec.name << ": no Hessian collected";
    PackTensorReport rep;
    const StoredTensor want = pack_tensor(p.spec.name, shape, w, p.spec.quant, preset.policy, &h->second.h, &rep);
    EXPECT_EQ(rep.method, quant::QuantMethod::Gptq) << p.spec.name;
    EXPECT_TRUE(rep.clip_searched) << p.spec.name;
    EXPECT_FALSE(rep.hessian_missing) << p.spec.name;
    EXPECT_EQ(t.q.codes, want.q.codes) << p.spec.name;
    EXPECT_EQ(t.q.scales, want.q.scales) << p.spec.name;
    gdn_differs_from_rtn += pack_tensor(p.spec.name, shape, w, p.spec.quant, rtn).q.codes != t.q.codes;
  }
  EXPECT_EQ(gdn_matrices, 2 * 7);  // two GDN layers x (q, k, v, a, b, g, o)
  EXPECT_EQ(gdn_small, 2 * 5);     // two GDN layers x (3 convs, A_log, dt_bias)
  EXPECT_EQ(gdn_differs_from_rtn, gdn_matrices);
  for (const TensorPackStats& s : r.tensors)
    if (s.method == "int-row") {
      EXPECT_TRUE(s.hessian) << s.name;
      EXPECT_EQ(s.bits, s.role == "embed" ? 8 : 6) << s.name;
    }

  // Loads back bit-exactly; the dequantised model's loss stays near the f32 one (int6 on d = 32 rows).
  auto loaded = load_model_from_artifact(path, Device::CPU);
  for (const model::Param& p : loaded->params().all())
    EXPECT_EQ(p.value.to_float_vector(), dequantize(back.get(p.spec.name))) << p.spec.name;
  const Tensor ids = model::testing::random_ids(4, 16, gpt.config().vocab_size, 99);
  const double want = mean_loss(gpt, ids), got = mean_loss(*loaded, ids);
  std::printf("pr1672 tiny hybrid: loss f32 %.5f, packed %.5f, artifact %zu bytes\n", want, got, r.budget.bytes.size());
  EXPECT_NEAR(got, want, 0.05 * std::abs(want));
  fs::remove_all(dir);
}

// The full-size pr1672 parameter set (33,460,904) under the preset's quantizers, with Gaussian stand-in
// rows as PackPreset.RecParameterSetFitsTheLimit (no Hessians: GPTQ roles take the RTN percentile search).
// Row-max / percentile clips on Gaussian rows clip near 3σ, so the codes carry ≈ 2.047 + log2(q_max / 3)
// bits (§7.7's formula at k ≈ 3): ≈ 5.4 bits for int6 — far more than the seed's 15.77 MB (3.7 bits per
// parameter), which rests on trained rows' heavy tails that a Gaussian stand-in cannot show. So this
// measures the stand-in's size against that formula and reports it; it does not claim a fit.
TEST(PackPr1672, FullParameterSetSizeOnGaussianRows) {
  const train::Config cfg = train::load_config_file(source_dir() + "/configs/pr1672.toml");
  const model::ParamTable t = model::GPT::describe(cfg.model);
  EXPECT_EQ(t.count_elements(), 33460904);
  const PackPreset preset = pack_preset("pr1672");
  std::mt19937 g(1);
  std::normal_distribution<float> d(0.f, 1.f);
  double bytes = 0, int_params = 0, int_bits = 0, want_bits = 0;
  int gate_roles = 0;
  for (const model::Param& p : t.all()) {
    const Shape& s = p.spec.shape;
    std::vector<int64_t> dims(s.d.begin(), s.d.begin() + s.nd);
    const int64_t rows = s[0], cols = s.numel() / rows;
    std::vector<float> w(static_cast<size_t>(s.numel()));
    for (float& v : w) v = 0.02f * d(g);
    if (p.spec.quant == model::QuantRole::Gate) {
      ++gate_roles;
      EXPECT_TRUE(is_gdn_matrix(p)) << p.spec.name << ": the gate role takes int6 here, meant for GDN W_a/W_b only";
    }
    const StoredTensor st = pack_tensor(p.spec.name, dims, w, p.spec.quant, preset.policy);
    if (is_gdn_matrix(p) || p.spec.group == model::OptGroup::Muon) {
      ASSERT_EQ(st.kind, StorageKind::IntRow) << p.spec.name;
      EXPECT_EQ(st.q.bits, 6) << p.spec.name;
    }
    if (st.kind != StorageKind::IntRow) {
      bytes += static_cast<double>(st.numel()) * 2;
      continue;
    }
    std::vector<double> hist(256, 0);
    for (int8_t c : st.q.codes) hist[static_cast<uint8_t>(c)] += 1;
    double h = 0;
    const double n = static_cast<double>(st.q.codes.size());
    for (double k : hist)
      if (k > 0) h -= k * std::log2(k / n);
    bytes += h / 8 + static_cast<double>(st.q.scales.size()) * 2;
    int_params += n;
    int_bits += h;
    // §7.7: bits ≈ 2.047 + log2(q_max / k) with k = clip / σ, the clip each row actually got.
    const double q_max = (1 << (st.q.bits - 1)) - 1;
    for (int64_t r = 0; r < rows; ++r) {
      const double clip = static_cast<double>(f16_bits_to_f32(st.q.scales[static_cast<size_t>(r)])) * q_max;
      want_bits += static_cast<double>(cols) * (2.047 + std::log2(q_max / (clip / 0.02)));
    }
  }
  EXPECT_EQ(gate_roles, 20);  // 10 GDN layers x (W_a, W_b)
  const double per_param = bytes * 8 / static_cast<double>(t.count_elements());
  std::printf("pr1672 Gaussian stand-in: order-0 estimate %.0f bytes (%.3f bits/param; codes %.3f bits, §7.7 formula "
              "%.3f); the seed stored 15,765,907-15,804,631 B from trained weights\n",
              bytes, per_param, int_bits / int_params, want_bits / int_params);
  EXPECT_NEAR(int_bits / want_bits, 1.0, 0.05);
}

}  // namespace pgolf::artifact
