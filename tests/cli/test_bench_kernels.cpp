// `pgolf bench kernels` on the CPU: a tiny config runs every op family once, the rows carry the FLOP and
// byte counts documented in src/cli/bench_preset_kernels.cpp, matmuls find their ANCHORS.md ceilings, and
// a mistyped config key fails the command instead of being ignored.
#include <gtest/gtest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/bench_preset_kernels.h"
#include "cli/commands.h"
#include "test_util.h"

using namespace pgolf;
namespace fs = std::filesystem;

namespace {

// vocab 64, 2 layers, d = 32, 2/1 heads of 16, MLP 2x = 64, one micro-step of 8 sequences of 16 tokens.
const char* kTinyToml = R"(
[model]
vocab_size = 64
num_layers = 2
model_dim = 32
num_heads = 2
num_kv_heads = 1
[train]
train_batch_tokens = 128
seq_len = 16
grad_accum = 1
device = "cpu"
)";

struct TinyConfig {
  fs::path dir = fs::temp_directory_path() / ("pgolf_bench_kernels_" + std::to_string(::getpid()));
  std::string toml = (dir / "tiny.toml").string();
  TinyConfig() {
    fs::create_directories(dir);
    std::ofstream(toml) << kTinyToml;
  }
  ~TinyConfig() { fs::remove_all(dir); }
};

void run_cli(const std::vector<std::string>& args) {
  CLI::App app;
  app.require_subcommand(1);
  cli::add_bench_command(app);
  std::vector<const char*> argv{"pgolf", "bench", "kernels"};
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST(BenchKernels, TinyConfigRowsAndCounts) {
  TinyConfig t;
  const std::string json = (t.dir / "k.json").string();
  run_cli({"--config", t.toml, "--reps", "1", "--warmup", "0", "--json", json});
  std::ifstream f(json);
  const nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["shapes"]["N"], 128);
  std::map<std::string, nlohmann::json> rows;
  for (const auto& r : j["rows"]) {
    rows[r["op"].get<std::string>()] = r;
    // Every row was timed and is exactly one of compute-bound or memory-bound.
    EXPECT_GT(r["ms"].get<double>(), 0) << r["op"];
    EXPECT_TRUE((r["flop"].get<double>() > 0) != (r["bytes"].get<double>() > 0)) << r["op"];
  }
  for (const char* op : {"linear q fwd", "linear q dgrad", "linear q wgrad", "linear k fwd", "linear v wgrad",
                         "linear attn proj fwd", "linear mlp fc dgrad", "linear mlp proj wgrad", "linear head fwd",
                         "attention fwd", "attention bwd", "rmsnorm fwd", "rmsnorm bwd", "mix_rmsnorm fwd",
                         "mix_rmsnorm bwd", "add_rmsnorm fwd", "add_rmsnorm bwd", "add_mul_channel fwd",
                         "add_mul_channel bwd", "qk_prep q fwd", "qk_prep k bwd", "activation relu2 fwd",
                         "activation relu2 bwd", "softcap cross_entropy", "embedding fwd", "embedding bwd",
                         "adam_step (tied embedding)", "muon_momentum", "muon_apply", "newton_schulz"})
    EXPECT_EQ(rows.count(op), 1u) << op;
  EXPECT_EQ(rows.count("xsa fwd"), 0u);  // only when the preset has XSA layers

  const double N = 128, d = 32, V = 64;
  // Matmul: 2 M N K; the head forward is (N x d)(d x V).
  EXPECT_DOUBLE_EQ(rows["linear head fwd"]["flop"].get<double>(), 2 * N * d * V);
  EXPECT_DOUBLE_EQ(rows["linear q wgrad"]["flop"].get<double>(), 2 * N * d * d);
  // Attention: causal forward 4 B H T^2 D / 2 with B = 8, T = 16, H = 2, D = 16; backward 2.5x.
  EXPECT_DOUBLE_EQ(rows["attention fwd"]["flop"].get<double>(), 4.0 * 8 * 2 * 16 * 16 * 16 / 2);
  EXPECT_DOUBLE_EQ(rows["attention bwd"]["flop"].get<double>(), 2.5 * 4.0 * 8 * 2 * 16 * 16 * 16 / 2);
  // add_rmsnorm fwd, f32 activations on the CPU: x, f read and y, n written (4 bytes each), rstd per row,
  // the scale vector s.
  EXPECT_DOUBLE_EQ(rows["add_rmsnorm fwd"]["bytes"].get<double>(), N * d * 16 + 4 * N + 4 * d);
  // softcap cross-entropy: the (N, V) logits read and dlogits written, targets and losses 4 bytes a row.
  EXPECT_DOUBLE_EQ(rows["softcap cross_entropy"]["bytes"].get<double>(), N * V * 8 + 8 * N);
  // No GPU ceilings are attached to CPU timings.
  EXPECT_EQ(rows["linear q fwd"]["ceiling"].get<double>(), 0);
}

TEST(BenchKernels, PresetSwitchesAddTheirOps) {
  TinyConfig t;
  const std::string json = (t.dir / "k.json").string();
  run_cli({"--config", t.toml, "--reps", "1", "--warmup", "0", "--set", "model.xsa_layers=all", "--set",
           "model.skip_gates=true", "--set", "model.activation=leaky_relu2", "--json", json});
  std::ifstream f(json);
  const nlohmann::json j = nlohmann::json::parse(f);
  std::vector<std::string> ops;
  for (const auto& r : j["rows"]) ops.push_back(r["op"]);
  for (const char* op : {"xsa fwd", "xsa bwd", "mix_channel fwd", "activation leaky_relu2 bwd"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
}

// GatedDeltaNet layers add the chunked op (on the CPU only its auto row), the short convolution and the gates.
TEST(BenchKernels, GdnLayersAddTheirOps) {
  TinyConfig t;
  const std::string json = (t.dir / "k.json").string();
  run_cli({"--config", t.toml, "--reps", "1", "--warmup", "0", "--set", "model.gdn_layers=0", "--json", json});
  std::ifstream f(json);
  const nlohmann::json j = nlohmann::json::parse(f);
  std::map<std::string, nlohmann::json> rows;
  for (const auto& r : j["rows"]) rows[r["op"].get<std::string>()] = r;
  for (const char* op : {"gdn_chunk fwd [auto]", "gdn_chunk bwd [auto]", "short_conv fwd", "short_conv bwd",
                         "gdn_gates fwd", "gdn_gates bwd", "attention fwd"})
    EXPECT_EQ(rows.count(op), 1u) << op;
  EXPECT_EQ(rows.count("gdn_chunk fwd [tc]"), 0u);  // the CPU has one implementation
  // B = 8, T = 16, H = 2, D = 16, one chunk, f32: q, k, v, o (4 bytes), the chunk-start states, g and beta.
  const double tok = 8 * 16 * 2, states = 8 * 2 * 1 * 16 * 16 * 4;
  EXPECT_DOUBLE_EQ(rows["gdn_chunk fwd [auto]"]["bytes"].get<double>(), tok * 16 * 4 * 4 + states + tok * 8);
  EXPECT_DOUBLE_EQ(rows["gdn_chunk bwd [auto]"]["bytes"].get<double>(), tok * 16 * 7 * 4 + states + tok * 16);
}

TEST(BenchKernels, MatmulCeilingPicksTheListedShape) {
  using cli::bench::matmul_ceiling;
  // Forward-like products match on (K, N) at any row count; weight gradients on the gradient's (M, N).
  EXPECT_EQ(matmul_ceiling(98304, 512, 512, false).tflops, 557);
  EXPECT_EQ(matmul_ceiling(65536, 2048, 512, false).tflops, 608);
  EXPECT_EQ(matmul_ceiling(98304, 512, 2048, false).tflops, 605);
  EXPECT_EQ(matmul_ceiling(98304, 8192, 512, false).tflops, 548);
  EXPECT_EQ(matmul_ceiling(2048, 512, 98304, true).tflops, 688);
  EXPECT_EQ(matmul_ceiling(512, 512, 65536, true).tflops, 560);
  // Not listed: the head's dgrad (N x 8192)(8192 x 512) and a (512, 2048) weight gradient.
  EXPECT_EQ(matmul_ceiling(98304, 512, 8192, false).tflops, cli::bench::kSquareMatmulTflops);
  EXPECT_EQ(matmul_ceiling(512, 2048, 98304, true).tflops, cli::bench::kSquareMatmulTflops);
  EXPECT_NEAR(cli::bench::kAttnBwdTflops, 297.8, 0.05);
}

TEST(BenchKernels, UnknownConfigKeyFails) {
  TinyConfig t;
  const std::string err = test::error_of([&] {
    run_cli({"--config", t.toml, "--reps", "1", "--warmup", "0", "--set", "model.modle_dim=64"});
  });
  EXPECT_NE(err.find("modle_dim"), std::string::npos) << err;
  // The same mistake inside the file fails too.
  std::ofstream(t.toml, std::ios::app) << "[optim]\nmatrix_lrr = 0.1\n";
  const std::string err2 = test::error_of([&] { run_cli({"--config", t.toml, "--reps", "1"}); });
  EXPECT_NE(err2.find("matrix_lrr"), std::string::npos) << err2;
}
