// `pgolf bench step --loop`: a looped preset's layer schedule is pinned for the whole short run (off: before
// looping, on: looped from the first step), told apart by the profiled attention calls per step.
#include <gtest/gtest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "test_util.h"

using namespace pgolf;
namespace fs = std::filesystem;

namespace {

struct LoopedTiny {
  fs::path dir = fs::temp_directory_path() / ("pgolf_bench_step_" + std::to_string(::getpid()));
  std::string toml;
  LoopedTiny() {
    fs::remove_all(dir);
    fs::create_directories(dir / "data");
    train::Config c = test::tiny_training(dir.string(), "b", 5, 3, 4, {6000}, 600);
    c.model.num_layers = 3;
    c.model.loop_start = 1, c.model.loop_end = 1, c.model.loop_passes = 1;  // layer 1 twice: 4 virtual layers
    c.model.loop_enable_frac = 0.5f;  // the preset's own switch: half way through the bench's steps
    c.train.train_batch_tokens = 2 * 16;
    c.train.grad_accum = 1;
    c.train.warmup_steps = 0;
    c.train.val_batch_tokens = 32;
    toml = (dir / "looped.toml").string();
    std::ofstream(toml) << train::to_toml(c);
  }
  ~LoopedTiny() { fs::remove_all(dir); }

  // Runs bench step; returns the profiled forward attention calls per step.
  double attention_calls(const std::string& loop) const {
    const std::string json = (dir / ("step-" + loop + ".json")).string();
    CLI::App app;
    app.require_subcommand(1);
    cli::add_bench_command(app);
    const std::vector<std::string> args{"pgolf", "bench", "step", "--config", toml, "--steps", "14", "--profile", "2",
                                        "--run-dir", (dir / ("run-" + loop)).string(), "--loop", loop, "--json", json};
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    app.parse(static_cast<int>(argv.size()), argv.data());
    std::ifstream f(json);
    const nlohmann::json j = nlohmann::json::parse(f);
    EXPECT_EQ(j.at("loop"), loop);
    for (const auto& row : j.at("profile"))
      if (row.at("label") == "fwd:attention") return row.at("calls").get<double>() / j.at("profile_steps").get<double>();
    ADD_FAILURE() << "no fwd:attention row";
    return 0;
  }
};

}  // namespace

TEST(BenchStep, LoopOffAndOnPinTheLayerSchedule) {
  LoopedTiny t;
  EXPECT_EQ(t.attention_calls("off"), 3.0);  // 3 layers, one micro-step
  EXPECT_EQ(t.attention_calls("on"), 4.0);   // layer 1 runs twice
  // The preset's schedule switches at 0.5 of 14 steps: the last (profiled) steps are looped.
  EXPECT_EQ(t.attention_calls("schedule"), 4.0);
}

TEST(BenchStep, UnknownLoopModeFails) {
  LoopedTiny t;
  EXPECT_THROW(t.attention_calls("sometimes"), Error);
}
