// End-to-end trainer tests on a tiny model on the CPU: resume bit-identity, NaN stop, bad input.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/memory.h"
#include "core/profile.h"
#include "data/file_util.h"
#include "data/shard.h"
#include "train/config.h"
#include "train/trainer.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::train;
namespace fs = std::filesystem;

namespace {

struct TinyRun {
  std::string dir;
  Config cfg;

  explicit TinyRun(const std::string& name) {
    dir = (fs::temp_directory_path() / fmt::format("pgolf_train_{}_{}", name, ::getpid())).string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    cfg = pgolf::test::tiny_training(dir, "t", 5, 7, 3, {4000, 1500}, 500);
    cfg.train.train_batch_tokens = 128;  // 2 micro-steps of 4 x 16
    cfg.train.grad_accum = 2;
    cfg.train.iterations = 6;
    cfg.train.warmdown_iters = 3;
    cfg.train.warmup_steps = 2;
    cfg.train.val_batch_tokens = 128;
    cfg.optim.muon_momentum_warmup_steps = 4;
  }
  ~TinyRun() { fs::remove_all(dir); }

  RunOptions opts(const std::string& run, std::vector<double>* losses) const {
    RunOptions o;
    o.run_dir = dir + "/" + run;
    o.quiet = true;
    if (losses) o.on_step = [losses](int64_t, double l) { losses->push_back(l); };
    return o;
  }
};

}  // namespace

TEST(Trainer, ResumeIsBitIdentical) {
  TinyRun t("resume");
  std::vector<double> full, part;
  RunResult a = run_training(t.cfg, t.opts("full", &full));
  ASSERT_EQ(full.size(), 6u);
  EXPECT_EQ(a.steps, 6);
  EXPECT_LT(full.back(), full.front());  // it learns

  RunOptions o = t.opts("split", &part);
  o.interrupt_after_steps = 3;
  RunResult b = run_training(t.cfg, o);
  EXPECT_TRUE(b.interrupted);
  EXPECT_EQ(b.steps, 3);
  ASSERT_TRUE(fs::exists(checkpoint_path(o.run_dir)));
  o.interrupt_after_steps = -1;
  o.resume = true;
  RunResult c = run_training(t.cfg, o);
  ASSERT_EQ(part.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(full[i], part[i]) << "step " << i + 1;
  EXPECT_EQ(a.val_loss, c.val_loss);
  EXPECT_EQ(a.int8_val_loss, c.int8_val_loss);
  EXPECT_GT(a.int8_zlib_bytes, 0);
  EXPECT_TRUE(fs::exists(config_path(o.run_dir)));

  // metrics.jsonl holds one "train" event per step over both processes, and a final val.
  std::ifstream in(o.run_dir + "/metrics.jsonl");
  int train_events = 0, final_events = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    train_events += j["type"] == "train";
    final_events += j["type"] == "final";
  }
  EXPECT_EQ(train_events, 6);
  EXPECT_EQ(final_events, 1);
}

// The shuffled loader (§2.5) draws other batches than the stream, and its position (sequences drawn)
// travels in the checkpoint: the resumed run repeats the uninterrupted one exactly.
TEST(Trainer, ResumeIsBitIdenticalWithTheShuffledLoader) {
  TinyRun t("shuffled");
  std::vector<double> sequential, full, part;
  run_training(t.cfg, t.opts("seq", &sequential));
  t.cfg.data.loader = "shuffled";
  run_training(t.cfg, t.opts("full", &full));
  ASSERT_EQ(full.size(), 6u);
  EXPECT_NE(full, sequential);
  RunOptions o = t.opts("split", &part);
  o.interrupt_after_steps = 4;
  run_training(t.cfg, o);
  o.interrupt_after_steps = -1;
  o.resume = true;
  run_training(t.cfg, o);
  ASSERT_EQ(part.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(full[i], part[i]) << "step " << i + 1;
  Config seq = t.cfg;
  seq.data.loader = "sequential";  // a checkpoint of the shuffled loader does not resume the stream
  const std::string e = error_of([&] { run_training(seq, o); });
  EXPECT_NE(e.find("shuffled loader"), std::string::npos) << e;
}

TEST(Trainer, NonFiniteStopsAndKeepsTheLastGoodCheckpoint) {
  TinyRun t("nan");
  t.cfg.train.warmup_steps = 0;
  RunOptions o = t.opts("run", nullptr);
  o.interrupt_after_steps = 2;
  run_training(t.cfg, o);
  const std::string before = data::read_file(checkpoint_path(o.run_dir));

  Config bad = t.cfg;
  bad.optim.scalar_lr = std::nan("");
  bad.train.checkpoint_every = 1;
  o.interrupt_after_steps = -1;
  o.resume = true;
  std::string e = error_of([&] { run_training(bad, o); });
  EXPECT_NE(e.find("not finite after step 3"), std::string::npos) << e;
  EXPECT_NE(e.find("last good checkpoint"), std::string::npos) << e;
  EXPECT_EQ(data::read_file(checkpoint_path(o.run_dir)), before);

  bad.train.checkpoint_every = 0;  // no checkpoint in the way: the loss itself reports the step
  e = error_of([&] { run_training(bad, o); });
  EXPECT_NE(e.find("training loss is nan at step 4"), std::string::npos) << e;
  EXPECT_EQ(data::read_file(checkpoint_path(o.run_dir)), before);
}

TEST(Trainer, RejectsTokensOutsideTheVocabulary) {
  TinyRun t("vocab");
  t.cfg.model.vocab_size = 32;  // the shards hold ids up to 47
  std::string e = error_of([&] { run_training(t.cfg, t.opts("run", nullptr)); });
  EXPECT_NE(e.find("t_train_000000.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab_size is 32"), std::string::npos) << e;
}

TEST(Trainer, TokenizerVocabMismatchIsAnError) {
  const char* shared = std::getenv("PGOLF_SHARED_DIR");
  std::string tok = std::string(shared ? shared : PGOLF_SOURCE_DIR "/../shared") + "/data/tokenizers/fineweb_1024_bpe.model";
  if (!fs::exists(tok)) GTEST_SKIP() << "no " << tok;
  TinyRun t("tok");
  t.cfg.data.tokenizer = tok;  // 1024 pieces, model vocab 64
  std::string e = error_of([&] { run_training(t.cfg, t.opts("run", nullptr)); });
  EXPECT_NE(e.find("fineweb_1024_bpe.model"), std::string::npos) << e;
}

// Resume with EMA and SWA on: the averages and the SWA count travel in the checkpoint, so the final
// (averaged) weights, their val loss and the int8 round trip are bit-identical to an uninterrupted run.
TEST(Trainer, ResumeIsBitIdenticalWithEmaAndSwa) {
  TinyRun t("resume_ema");
  t.cfg.optim.ema_decay = 0.6;
  t.cfg.optim.swa_every = 2;
  t.cfg.optim.swa_lr_threshold = 1.5;  // every second step (the multiplier is <= 1)
  t.cfg.optim.final_weights = "ema_swa";
  std::vector<double> full, part;
  RunResult a = run_training(t.cfg, t.opts("full", &full));
  ASSERT_EQ(full.size(), 6u);

  RunOptions o = t.opts("split", &part);
  o.interrupt_after_steps = 3;  // SWA holds one snapshot (step 2), the EMA three updates
  run_training(t.cfg, o);
  o.interrupt_after_steps = -1;
  o.resume = true;
  RunResult c = run_training(t.cfg, o);
  ASSERT_EQ(part.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(full[i], part[i]) << "step " << i + 1;
  EXPECT_EQ(a.val_loss, c.val_loss);
  EXPECT_EQ(a.int8_val_loss, c.int8_val_loss);
  const std::string wa = t.dir + "/full/final_model.safetensors", wc = o.run_dir + "/final_model.safetensors";
  ASSERT_TRUE(fs::exists(wa));
  EXPECT_EQ(data::read_file(wa), data::read_file(wc));

  // The averaged weights are what was scored: the same run without averaging scores differently, and
  // its final weights are the live ones (no separate file).
  Config plain = t.cfg;
  plain.optim.ema_decay = 0;
  plain.optim.swa_every = 0;
  plain.optim.final_weights = "auto";
  std::vector<double> plain_losses;
  RunResult p = run_training(plain, t.opts("plain", &plain_losses));
  EXPECT_EQ(plain_losses, full);  // averaging never touches training
  EXPECT_NE(p.val_loss, a.val_loss);
  EXPECT_FALSE(fs::exists(t.dir + "/plain/final_model.safetensors"));
}

// The loop warm-up (§5.12) runs extra compile warm-up steps with looping on, and is undone like the
// plain warm-up: training afterwards is bit-identical to a run without it.
TEST(Trainer, LoopWarmupIsUndone) {
  TinyRun t("loopwarm");
  t.cfg.model.loop_start = 0;
  t.cfg.model.loop_end = 0;
  t.cfg.model.loop_passes = 1;
  t.cfg.model.loop_enable_frac = 0.5f;
  t.cfg.train.iterations = 4;
  t.cfg.train.int8_roundtrip = false;
  std::vector<double> with, without;
  Config c = t.cfg;
  c.train.loop_warmup_steps = 2;
  run_training(c, t.opts("with", &with));
  run_training(t.cfg, t.opts("without", &without));
  ASSERT_EQ(with.size(), 4u);
  EXPECT_EQ(with, without);
  const std::string log = data::read_file(t.dir + "/with/train.log");
  EXPECT_NE(log.find("warm-up: 2 steps + 2 looped"), std::string::npos) << log;
}

// Late QAT (config [qat]): the fake-quantized forward changes the losses from the first QAT step on,
// steps before the threshold are identical, and the losses stay finite. (That the masters are restored
// after each step is tests/quant/test_fake_quant.cpp's.)
TEST(Trainer, LateQatChangesLossesOnlyOnceActive) {
  TinyRun t("qat");
  t.cfg.train.int8_roundtrip = false;
  std::vector<double> plain, qat;
  Config c = t.cfg;
  c.qat.enabled = true;
  c.qat.lr_threshold = 0.9;  // step schedule, warmdown over the last 3 of 6 steps: on from the 4th step
  c.qat.bits = 4;            // a coarse grid, so the effect is unmistakable
  run_training(c, t.opts("qat", &qat));
  run_training(t.cfg, t.opts("plain", &plain));
  ASSERT_EQ(qat.size(), plain.size());
  size_t first_diff = qat.size();
  for (size_t i = 0; i < qat.size(); ++i) {
    EXPECT_TRUE(std::isfinite(qat[i]));
    if (first_diff == qat.size() && qat[i] != plain[i]) first_diff = i;
  }
  EXPECT_GE(first_diff, 2u) << "QAT must not act before the lr multiplier falls below the threshold";
  EXPECT_LT(first_diff, qat.size()) << "QAT never changed a loss";
  // Bad settings fail clearly.
  Config bad = t.cfg;
  bad.qat.bits = 1;
  EXPECT_NE(error_of([&] { validate(bad, 1); }).find("qat.bits"), std::string::npos);
}

// The op profiler through the trainer: the profiled window yields per-op rows (forward and backward of
// the tape ops, the step phases) and the steady rate leaves those steps out.
TEST(Trainer, ProfileWindowReportsOpRows) {
  TinyRun t("profile");
  RunOptions o = t.opts("run", nullptr);
  o.profile_from = 3;
  o.profile_steps = 2;
  RunResult r = run_training(t.cfg, o);
  EXPECT_EQ(r.profile_steps, 2);
  EXPECT_GT(r.profile_wall_ms, 0);
  auto find = [&](const std::string& label) {
    for (const auto& row : r.profile)
      if (row.label == label) return row.calls;
    return int64_t{0};
  };
  EXPECT_EQ(find("step:optimizer"), 2);
  EXPECT_EQ(find("step:forward_backward"), 4);  // 2 micro-steps per step
  EXPECT_EQ(find("fwd:qk_prep"), 2 * 2 * 2 * t.cfg.model.num_layers);  // q and k, per layer, micro-step, step
  EXPECT_EQ(find("bwd:qk_prep"), find("fwd:qk_prep"));
  EXPECT_GT(find("fwd:linear blocks.attn.c_q"), 0);
  EXPECT_FALSE(prof::enabled());
}

// Whole-step CUDA graphs replay the same training as eager steps (GPU only).
TEST(Trainer, CudaGraphStepsMatchEagerSteps) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  TinyRun t("graph");
  t.cfg.train.device = "cuda";
  t.cfg.train.iterations = 8;
  std::vector<double> eager, graphed;
  Config c = t.cfg;
  c.train.cuda_graph = false;
  run_training(c, t.opts("eager", &eager));
  c.train.cuda_graph = true;
  run_training(c, t.opts("graphed", &graphed));
  ASSERT_EQ(eager.size(), graphed.size());
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_NEAR(eager[i], graphed[i], 2e-3 * std::fabs(eager[i])) << "step " << i + 1;  // float atomics differ
  std::ifstream in(t.dir + "/graphed/train.log");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("cuda graphs: whole steps are captured"), std::string::npos);
}

namespace {

// The "grad_norm" of every train event in a run's metrics.jsonl (logged on train_log_every steps with clipping).
std::vector<double> logged_grad_norms(const std::string& run_dir) {
  std::vector<double> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto e = nlohmann::json::parse(line);
    if (e.value("type", "") == "train" && e.contains("grad_norm")) out.push_back(e["grad_norm"].get<double>());
  }
  return out;
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::fabs(a[i] - b[i]) / std::fabs(a[i]));
  return d;
}

}  // namespace

// Grad-norm clipping and late QAT inside whole-step CUDA graphs (GPU only): the clip's norm and scale are device
// work of the captured step, and the QAT steps replay a graph of their own, captured in the warm-up. The graphed run
// matches the eager one to float-atomic noise, and each feature visibly acts in it: dropping the clip or QAT moves
// the graphed losses far more than that noise (so a graph that left either out would fail).
TEST(Trainer, CudaGraphStepsMatchEagerWithClipAndLateQat) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  TinyRun t("graphclipqat");
  t.cfg.train.device = "cuda";
  t.cfg.train.iterations = 10;
  t.cfg.train.warmdown_iters = 5;  // step schedule: lr multiplier 0.8, 0.6, 0.4, 0.2 on the last 4 steps
  t.cfg.train.train_log_every = 1;
  t.cfg.train.int8_roundtrip = false;
  t.cfg.optim.grad_clip_norm = 0.05;
  t.cfg.qat.enabled = true;
  t.cfg.qat.lr_threshold = 0.9;  // QAT on the last 4 steps
  t.cfg.qat.bits = 4;
  std::vector<double> eager, graphed, no_qat, no_clip;
  Config c = t.cfg;
  c.train.cuda_graph = false;
  run_training(c, t.opts("eager", &eager));
  c.train.cuda_graph = true;
  run_training(c, t.opts("graphed", &graphed));
  Config off = c;
  off.qat.enabled = false;
  run_training(off, t.opts("noqat", &no_qat));
  off = c;
  off.optim.grad_clip_norm = 0;
  run_training(off, t.opts("noclip", &no_clip));

  ASSERT_EQ(eager.size(), 10u);
  ASSERT_EQ(graphed.size(), eager.size());
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_NEAR(eager[i], graphed[i], 2e-3 * std::fabs(eager[i])) << "step " << i + 1;  // float atomics differ
  const std::vector<double> norms_eager = logged_grad_norms(t.dir + "/eager"),
                            norms_graphed = logged_grad_norms(t.dir + "/graphed");
  ASSERT_EQ(norms_eager.size(), eager.size());
  ASSERT_EQ(norms_graphed.size(), eager.size());
  for (size_t i = 0; i < eager.size(); ++i) {
    EXPECT_NEAR(norms_eager[i], norms_graphed[i], 2e-3 * norms_eager[i]) << "grad norm, step " << i + 1;
    EXPECT_GT(norms_graphed[i], t.cfg.optim.grad_clip_norm) << "the clip must act at step " << i + 1;
  }
  const double noise = max_rel_diff(eager, graphed);
  std::printf("graph vs eager %.3g, without QAT %.3g, without clip %.3g (max relative loss differences)\n", noise,
              max_rel_diff(graphed, no_qat), max_rel_diff(graphed, no_clip));
  EXPECT_GT(max_rel_diff(graphed, no_qat), 10 * noise) << "QAT does not act in the graphed run";
  EXPECT_GT(max_rel_diff(graphed, no_clip), 10 * noise) << "the clip does not act in the graphed run";
  const std::string log = data::read_file(t.dir + "/graphed/train.log");
  EXPECT_NE(log.find("cuda graphs: whole steps are captured"), std::string::npos) << log;
  EXPECT_NE(log.find("warm-up: 2 steps + 0 looped + 2 with QAT"), std::string::npos) << log;
  EXPECT_NE(log.find("grad_norm:"), std::string::npos) << log;
}
