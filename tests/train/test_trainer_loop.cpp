// Progressive loop activation in the trainer (TECHNIQUES.md §5.12, model.loop_pass_fracs) on a tiny CPU run:
// the extra passes switch on at the right steps (step schedule: fraction = step / iterations), equal fractions
// are exactly the all-at-once loop_enable_frac, and a run resumed between two switches is bit-identical.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/file_util.h"
#include "train/config.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace pgolf;
using namespace pgolf::train;
namespace fs = std::filesystem;

namespace {

struct LoopRun {
  std::string dir;
  Config cfg;

  explicit LoopRun(const std::string& name) {
    dir = (fs::temp_directory_path() / fmt::format("pgolf_trainloop_{}_{}", name, ::getpid())).string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    cfg = pgolf::test::tiny_training(dir, "t", 5, 7, 3, {4000, 1500}, 500);
    cfg.model.num_layers = 3;
    cfg.model.loop_start = 1;
    cfg.model.loop_end = 1;
    cfg.model.loop_passes = 2;
    cfg.model.loop_pass_fracs = "0.25,0.5";  // 8 steps: pass 1 from step 2, pass 2 from step 4
    cfg.train.train_batch_tokens = 64;
    cfg.train.grad_accum = 1;
    cfg.train.iterations = 8;
    cfg.train.warmdown_iters = 3;
    cfg.train.warmup_steps = 1;
    cfg.train.val_batch_tokens = 64;
    cfg.train.int8_roundtrip = false;
  }
  ~LoopRun() { fs::remove_all(dir); }

  RunOptions opts(const std::string& run, std::vector<double>* losses) const {
    RunOptions o;
    o.run_dir = dir + "/" + run;
    o.quiet = true;
    if (losses) o.on_step = [losses](int64_t, double l) { losses->push_back(l); };
    return o;
  }
};

// (step, passes) of every "loop" event of a run's metrics.jsonl.
std::vector<std::pair<int64_t, int>> loop_events(const std::string& run_dir) {
  std::vector<std::pair<int64_t, int>> out;
  std::istringstream in(data::read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("type", "") == "loop") out.emplace_back(j.at("step").get<int64_t>(), j.at("passes").get<int>());
  }
  return out;
}

}  // namespace

TEST(TrainerLoop, PassesSwitchOnAtTheirFractions) {
  LoopRun t("switch");
  std::vector<double> prog, plain;
  run_training(t.cfg, t.opts("prog", &prog));
  using E = std::vector<std::pair<int64_t, int>>;
  EXPECT_EQ(loop_events(t.dir + "/prog"), (E{{0, 0}, {2, 1}, {4, 2}}));
  const std::string log = data::read_file(t.dir + "/prog/train.log");
  EXPECT_NE(log.find("loop: 1 of 2 extra passes from step 2 (4 virtual layers)"), std::string::npos) << log;
  EXPECT_NE(log.find("loop: 2 of 2 extra passes from step 4 (5 virtual layers)"), std::string::npos) << log;
  // The compile warm-up ran the loop warm-up at each stage (1 and 2 passes).
  Config w = t.cfg;
  w.train.loop_warmup_steps = 1;
  std::vector<double> warmed;
  run_training(w, t.opts("warm", &warmed));
  EXPECT_NE(data::read_file(t.dir + "/warm/train.log").find("warm-up: 1 steps + 2 looped"), std::string::npos);
  EXPECT_EQ(warmed, prog) << "the loop warm-up is undone";

  // Before the first switch the run is the unlooped one; from it on, it differs.
  Config c = t.cfg;
  c.model.loop_pass_fracs = "";
  c.model.loop_enable_frac = 1.0f;  // never reached inside the 8 steps (fraction 7/8 at the last)
  run_training(c, t.opts("plain", &plain));
  ASSERT_EQ(prog.size(), 8u);
  ASSERT_EQ(plain.size(), 8u);
  EXPECT_EQ(prog[0], plain[0]);
  EXPECT_EQ(prog[1], plain[1]);
  EXPECT_NE(prog[2], plain[2]);
}

TEST(TrainerLoop, EqualFractionsAreLoopEnableFrac) {
  LoopRun t("equal");
  Config a = t.cfg, b = t.cfg;
  a.model.loop_pass_fracs = "0.5,0.5";
  b.model.loop_pass_fracs = "";
  b.model.loop_enable_frac = 0.5f;
  std::vector<double> la, lb;
  run_training(a, t.opts("a", &la));
  run_training(b, t.opts("b", &lb));
  ASSERT_EQ(la.size(), 8u);
  EXPECT_EQ(la, lb);
  using E = std::vector<std::pair<int64_t, int>>;
  EXPECT_EQ(loop_events(t.dir + "/b"), (E{{0, 0}, {4, 2}}));
}

TEST(TrainerLoop, ResumeBetweenSwitchesIsBitIdentical) {
  LoopRun t("resume");
  std::vector<double> full, part;
  RunResult a = run_training(t.cfg, t.opts("full", &full));
  RunOptions o = t.opts("split", &part);
  o.interrupt_after_steps = 3;  // after the first switch (step 2), before the second (step 4)
  run_training(t.cfg, o);
  o.interrupt_after_steps = -1;
  o.resume = true;
  RunResult c = run_training(t.cfg, o);
  ASSERT_EQ(full.size(), 8u);
  ASSERT_EQ(part.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(full[i], part[i]) << "step " << i + 1;
  EXPECT_EQ(a.val_loss, c.val_loss);
  // The resumed process reports the stage it resumed in, then the second switch.
  using E = std::vector<std::pair<int64_t, int>>;
  EXPECT_EQ(loop_events(t.dir + "/split"), (E{{0, 0}, {2, 1}, {3, 1}, {4, 2}}));
}
