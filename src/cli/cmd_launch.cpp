// pgolf launch --gpus N [--loopback] -- train|eval ...: start N data-parallel ranks on this machine
// (docs/DISTRIBUTED.md). Default: N child processes of this same binary with the torchrun environment (each rank
// then uses NCCL on GPU LOCAL_RANK). --loopback: N threads of this process joined by the loopback communicator
// (CPU, deterministic; no GPU or NCCL needed), each running the unchanged `train` or `eval` command.
#include <unistd.h>

#include <climits>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "dist/loopback_comm.h"

namespace pgolf::cli {

namespace {

struct LaunchArgs {
  int ranks = 0;
  bool loopback = false;
  int master_port = 0;
  double grace_s = 5;
  double timeout_s = 30;
  std::vector<std::string> command;
};

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  PG_CHECK(n > 0, "launch: cannot resolve /proc/self/exe (is /proc mounted?)");
  return std::string(buf, static_cast<size_t>(n));
}

// One loopback rank: the `train` or `eval` command, parsed and run on this thread with `comm` as its communicator.
void run_loopback_rank(const std::vector<std::string>& command, dist::Communicator& comm) {
  dist::set_thread_comm(&comm);
  struct Reset {
    ~Reset() { dist::set_thread_comm(nullptr); }
  } reset;
  CLI::App app{"pgolf (loopback rank)"};
  app.require_subcommand(1);
  add_train_command(app);
  add_eval_command(app);
  std::vector<const char*> argv{"pgolf"};
  for (const auto& a : command) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    PG_FAIL("rank {}: bad `{}` arguments: {}", comm.rank(), command[0], e.what());
  }
}

void run_launch(const LaunchArgs& a) {
  PG_CHECK(!a.command.empty(), "pgolf launch needs the command to run after --, e.g. pgolf launch --gpus 8 -- train "
           "-c configs/baseline.toml");
  if (a.loopback) {
    PG_CHECK(a.command[0] == "train" || a.command[0] == "eval", "pgolf launch --loopback runs `train` or `eval` "
             "only (got `{}`): other commands take no communicator", a.command[0]);
    // A rank that fails aborts the others at once; one that hangs makes them fail after timeout_s.
    dist::run_loopback(a.ranks, [&](dist::Communicator& c) { run_loopback_rank(a.command, c); }, a.timeout_s);
    return;
  }
  PG_CHECK((a.command[0] != "train" && a.command[0] != "eval") || dist::nccl_available(), "pgolf launch: this build "
           "has no NCCL, so its ranks cannot {} on GPUs together; use --loopback for CPU ranks (threads) or a CUDA "
           "build with libnccl", a.command[0]);
  dist::LaunchSpec spec;
  spec.exe = self_exe();
  spec.args = a.command;
  spec.nprocs = a.ranks;
  spec.master_port = a.master_port;
  spec.grace_s = a.grace_s;
  dist::launch_local(spec);
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  auto* sub = app.add_subcommand("launch", "Start N local data-parallel ranks: pgolf launch --gpus N -- train ... "
                                           "(see docs/DISTRIBUTED.md)");
  sub->add_option("--gpus,-n", args->ranks, "Ranks to start on this machine (one per GPU; threads with --loopback)")
      ->required()
      ->check(CLI::Range(1, 4096));
  sub->add_flag("--loopback", args->loopback, "Ranks are threads of this process on the CPU (loopback communicator)");
  sub->add_option("--master-port", args->master_port, "Rendezvous port on 127.0.0.1 (default: a free one)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--grace", args->grace_s, "After a rank fails: seconds between SIGTERM and SIGKILL of the others")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--timeout", args->timeout_s, "--loopback: seconds a rank waits in a collective before failing")
      ->check(CLI::PositiveNumber);
  sub->add_option("command", args->command, "The pgolf command every rank runs, after --")->required();
  sub->callback([args] { run_launch(*args); });
}

}  // namespace pgolf::cli
