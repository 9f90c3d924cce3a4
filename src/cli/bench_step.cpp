// `pgolf bench step --config FILE`: the whole training step of a preset, measured through the real
// trainer (same data path, memory plan, optimizer) for a short run: steady ms/step, tokens/s, MFU and
// peak memory, then an op-level profile of a few steps (core/profile.h) that says where the time goes.
// Ratios are printed against an anchor rate when one is given (ANCHORS.md: PyTorch on an H100).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/profile.h"
#include "data/file_util.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pgolf::cli {

namespace {

struct StepBenchArgs {
  std::string config_file;
  std::vector<std::string> sets;
  std::string run_dir = "runs/bench-step";
  int64_t steps = 30;
  int64_t profile_steps = 3;
  double anchor_tokens_per_s = 0;
  std::string json;
  std::string loop = "off";  // a looped preset's layer schedule during the bench: off | on | schedule
};

// The bench runs `--steps` iterations, so a preset's own loop schedule (§5.12: on at loop_enable_frac of the run)
// would switch the loop on part-way through the few measured steps; off and on pin one schedule for the whole run.
void pin_loop(train::Config& cfg, const std::string& loop) {
  PG_CHECK(loop == "off" || loop == "on" || loop == "schedule",
           "pgolf bench step: --loop {} is not one of off, on, schedule", loop);
  if (loop == "schedule" || !cfg.model.has_loop()) return;
  cfg.model.loop_pass_fracs.clear();
  cfg.model.loop_enable_frac = loop == "on" ? 0.f : 1.f;  // the run's fraction stays below 1 at every step
}

void run_step_bench(const StepBenchArgs& a) {
  PG_CHECK(!a.config_file.empty(), "pgolf bench step needs --config FILE");
  PG_CHECK(a.steps >= 12 + a.profile_steps, "pgolf bench step: --steps {} is too few: the first 10 steps are not "
           "measured and {} are profiled (need at least {})", a.steps, a.profile_steps, 12 + a.profile_steps);
  train::Config cfg = train::load_config_file(a.config_file);
  for (const auto& s : a.sets) train::apply_override(cfg, s);
  pin_loop(cfg, a.loop);
  // A short, uncapped run: no periodic validation, a one-batch final validation, no export.
  cfg.train.iterations = a.steps;
  cfg.train.max_wallclock_seconds = 0;
  cfg.train.val_loss_every = 0;
  cfg.train.checkpoint_every = 0;
  cfg.train.int8_roundtrip = false;
  cfg.train.val_max_tokens = cfg.train.seq_len;
  cfg.output.run_dir = a.run_dir;
  train::RunOptions opt;
  opt.run_dir = a.run_dir;
  opt.quiet = true;
  opt.profile_steps = a.profile_steps;
  opt.profile_from = a.steps - a.profile_steps;  // profile last: the steady rate excludes profiled steps
  std::filesystem::remove_all(a.run_dir);
  const train::RunResult r = train::run_training(cfg, opt);

  const double tok = r.tokens_per_s;
  const double ms = tok > 0 ? 1000.0 * static_cast<double>(cfg.train.train_batch_tokens) / tok : 0;
  std::printf("pgolf bench step: %s, %lld steps (%lld measured after 10 warm steps; %lld profiled)%s\n",
              a.config_file.c_str(), static_cast<long long>(r.steps),
              static_cast<long long>(r.steps - 10 - r.profile_steps), static_cast<long long>(r.profile_steps),
              cfg.model.has_loop() ? (", loop " + a.loop).c_str() : "");
  std::printf("  %-28s %12.1f\n", "ms/step (steady)", ms);
  std::printf("  %-28s %12.0f\n", "tokens/s", tok);
  if (a.anchor_tokens_per_s > 0)
    std::printf("  %-28s %12.3fx of %.0f\n", "ratio to anchor", tok / a.anchor_tokens_per_s, a.anchor_tokens_per_s);
  std::printf("  %-28s %12.2f\n", "peak GPU memory (GiB)", static_cast<double>(r.peak_gpu_bytes) / (1 << 30));
  std::printf("  %-28s %12.4f\n", "train loss end (val, 1 batch)", r.val_loss);
  if (!r.profile.empty()) {
    std::printf("\nop profile, %lld steps, %.1f ms/step wall with profiling on (times are GPU event intervals;\n"
                "step:* rows contain the fwd:/bwd: rows of the ops they run):\n%s",
                static_cast<long long>(r.profile_steps), r.profile_wall_ms / static_cast<double>(r.profile_steps),
                prof::table(r.profile, r.profile_wall_ms, r.profile_steps).c_str());
  }
  if (!a.json.empty()) {
    nlohmann::json j = {{"bench", "step"},        {"config", a.config_file},          {"steps", r.steps},
                        {"ms_per_step", ms},      {"tokens_per_s", tok},              {"peak_gpu_bytes", r.peak_gpu_bytes},
                        {"anchor_tokens_per_s", a.anchor_tokens_per_s},               {"sets", a.sets},
                        {"profile_steps", r.profile_steps},                           {"profile_wall_ms", r.profile_wall_ms},
                        {"loop", cfg.model.has_loop() ? a.loop : "none"}};
    nlohmann::json rows = nlohmann::json::array();
    for (const prof::Row& p : r.profile) rows.push_back({{"label", p.label}, {"ms", p.ms}, {"calls", p.calls}});
    j["profile"] = rows;
    data::write_file_atomic(a.json, j.dump(2) + "\n");
  }
}

}  // namespace

void add_bench_step_command(CLI::App* bench_cmd) {
  auto args = std::make_shared<StepBenchArgs>();
  auto* sub = bench_cmd->add_subcommand("step", "A whole training step of a preset: ms/step, tokens/s, memory and an "
                                                "op-level profile (runs the trainer for --steps steps)");
  sub->add_option("--config,-c", args->config_file, "TOML config (e.g. configs/baseline.toml)")->required();
  sub->add_option("--set", args->sets, "Override a key: section.key=value (repeatable)")->take_all();
  sub->add_option("--steps", args->steps, "Training steps to run")->capture_default_str();
  sub->add_option("--profile", args->profile_steps, "Steps profiled at the end (0 = none)")->capture_default_str();
  sub->add_option("--run-dir", args->run_dir, "Scratch run directory (replaced)")->capture_default_str();
  sub->add_option("--anchor-tokens-per-s", args->anchor_tokens_per_s,
                  "Reference rate for a ratio (ANCHORS.md: baseline 1472000, rec-2026-04-09 862000)");
  sub->add_option("--json", args->json, "Also write the results to this JSON file");
  sub->add_option("--loop", args->loop,
                  "A looped preset's layers during the bench: off (before looping), on (looped from step 0) or "
                  "schedule (the preset's own switch point, scaled to --steps)")->capture_default_str();
  sub->callback([args] { run_step_bench(*args); });
}

}  // namespace pgolf::cli
