// pgolf train: train a model from a TOML config (src/train), or continue an interrupted run.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pgolf::cli {

namespace {

struct TrainArgs {
  std::string config_file;
  std::vector<std::string> sets;
  std::string run_dir;
  std::string resume_dir;
  int64_t checkpoint_every = -1;
  bool quiet = false;
};

void run_train(const TrainArgs& a) {
  train::Config cfg;
  train::RunOptions opt;
  if (!a.resume_dir.empty()) {
    // The run's own resolved config is the base; --config is not allowed to silently replace it.
    PG_CHECK(a.config_file.empty(), "--resume takes its config from {}; drop --config (use --set to change keys)",
             train::config_path(a.resume_dir));
    PG_CHECK(std::filesystem::exists(train::checkpoint_path(a.resume_dir)), "--resume {}: no checkpoint at {}",
             a.resume_dir, train::checkpoint_path(a.resume_dir));
    cfg = train::load_config_file(train::config_path(a.resume_dir));
    opt.resume = true;
    opt.run_dir = a.resume_dir;
  } else {
    PG_CHECK(!a.config_file.empty(), "pgolf train needs --config FILE (or --resume RUN_DIR)");
    cfg = train::load_config_file(a.config_file);
  }
  for (const auto& s : a.sets) train::apply_override(cfg, s);
  if (a.checkpoint_every >= 0) cfg.train.checkpoint_every = a.checkpoint_every;
  if (!a.run_dir.empty()) {
    PG_CHECK(a.resume_dir.empty() || a.run_dir == a.resume_dir, "--run-dir and --resume name different folders");
    cfg.output.run_dir = a.run_dir;
  }
  if (opt.run_dir.empty()) opt.run_dir = cfg.output.run_dir;
  cfg.output.run_dir = opt.run_dir;
  opt.quiet = a.quiet;
  // Data parallel: a loopback rank of `pgolf launch --loopback`, or NCCL when launched as a rank (docs/DISTRIBUTED.md).
  std::unique_ptr<dist::Communicator> nccl;
  opt.comm = dist::thread_comm();
  if (!opt.comm) {
    const dist::RankInfo info = dist::rank_info_from_env();
    if (info.source != "single") {
      nccl = dist::make_nccl_comm(info, dist::fnv1a64(train::to_toml(cfg)));
      opt.comm = nccl.get();
    }
  }
  train::RunResult r = train::run_training(cfg, opt);
  if (opt.comm && opt.comm->rank() != 0) return;
  if (r.interrupted) {
    std::printf("pgolf train: stopped cleanly at step %lld; resume with: pgolf train --resume %s\n",
                static_cast<long long>(r.steps), opt.run_dir.c_str());
    return;
  }
  std::printf("pgolf train: %lld steps, val_bpb %.4f, int8+zlib %lld bytes, round-trip val_bpb %.4f, run dir %s\n",
              static_cast<long long>(r.steps), r.val_bpb, static_cast<long long>(r.int8_zlib_bytes), r.int8_val_bpb,
              opt.run_dir.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "Train a model from a TOML config (see docs/TRAINING.md)");
  sub->add_option("--config,-c", args->config_file, "TOML config file (e.g. configs/baseline.toml)");
  sub->add_option("--set", args->sets, "Override a key: section.key=value (repeatable)")->take_all();
  sub->add_option("--run-dir", args->run_dir, "Output folder (default: output.run_dir of the config)");
  sub->add_option("--resume", args->resume_dir, "Continue the run in this folder from its checkpoint");
  sub->add_option("--checkpoint-every", args->checkpoint_every, "Write a checkpoint every N steps (0 = only on signal)");
  sub->add_flag("--quiet,-q", args->quiet, "No log lines on stdout (files are still written)");
  sub->callback([args] { run_train(*args); });
}

}  // namespace pgolf::cli
