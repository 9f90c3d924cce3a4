#pragma once
// The training loop of the reference baseline (TECHNIQUES.md §4.4): grad-accumulated steps of
// GPT::forward_backward, Muon + Adam, the wallclock-driven warm-down, periodic validation with exact
// val_bpb, the wallclock cap (validation time excluded), checkpoints and resume, and the final
// int8 + zlib round trip (§4.5).
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/profile.h"
#include "train/config.h"

namespace pgolf::dist {
class Communicator;
}

namespace pgolf::train {

struct RunOptions {
  std::string run_dir;
  bool resume = false;   // continue from run_dir/checkpoint.bin
  bool quiet = false;    // no stdout (tests); files are still written
  // Called after every optimizer step with the step number (1-based) and its mean train loss.
  std::function<void(int64_t, double)> on_step;
  // Test hook: behave as if SIGINT arrived after this many steps of this process (-1 = never).
  int64_t interrupt_after_steps = -1;
  // Data parallel (docs/DISTRIBUTED.md): this process is comm->rank() of comm->world(); null = one rank.
  // Rank r trains on its span of every micro-step's chunk; gradients and the loss are summed over ranks
  // (the loss scale is 1 / global tokens, so a sum is the mean); rank 0 alone writes logs, checkpoints and the
  // int8 export, and decides the wallclock schedule and stops for everyone.
  dist::Communicator* comm = nullptr;
  // Reduce every micro-step's fresh gradients into one accumulator in global micro-step order (rank order
  // within a micro-step). With the loopback comm a world-W run then equals a world-1 run with the same option
  // bit for bit; costs a gradient-sized collective per micro-step and an extra gradient buffer (tests).
  bool exact_accumulation = false;
  // Op-level profile (core/profile.h) of this process's steps [profile_from, profile_from + profile_steps):
  // the table goes to the log and RunResult::profile. 0 = off. Profiling adds two events per op.
  int64_t profile_from = 10;
  int64_t profile_steps = 0;
};

struct RunResult {
  int64_t steps = 0;
  bool interrupted = false;  // stopped by a signal: checkpoint written, exit 0
  double train_ms = 0;
  double tokens_per_s = 0;   // steady rate (after the first 10 steps of this process)
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_bpb = std::numeric_limits<double>::quiet_NaN();
  double int8_val_loss = std::numeric_limits<double>::quiet_NaN();
  double int8_val_bpb = std::numeric_limits<double>::quiet_NaN();
  int64_t int8_zlib_bytes = 0;
  size_t peak_gpu_bytes = 0;
  // Filled when RunOptions::profile_steps > 0: per-label totals over the profiled steps and their wall time.
  std::vector<prof::Row> profile;
  double profile_wall_ms = 0;
  int64_t profile_steps = 0;
};

// Runs training. Throws pgolf::Error on bad input and on a non-finite loss (naming the step).
RunResult run_training(const Config& cfg, const RunOptions& opt);

// Model FLOPs per trained token: 6 N + 6 L T d (causal attention, forward + backward).
double flops_per_token(const model::ModelConfig& m, int64_t n_params, int64_t seq_len);

// The checkpoint / config file names inside a run directory.
std::string checkpoint_path(const std::string& run_dir);
std::string config_path(const std::string& run_dir);
// RUN_DIR/final_model.safetensors: the evaluated weights when they are not the live ones (EMA / SWA,
// optim.final_weights); artifact::load_model_from_run prefers it over the checkpoint's parameters.
std::string final_weights_path(const std::string& run_dir);

}  // namespace pgolf::train
