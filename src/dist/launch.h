#pragma once
// Local launcher behind `pgolf launch --gpus N -- CMD ...` (docs/DISTRIBUTED.md): starts N ranks of one node as
// child processes with the torchrun environment, forwards SIGINT/SIGTERM to them, and stops the whole group when
// one rank fails, so a dead rank never leaves the others hanging in a collective.
#include <functional>
#include <string>
#include <vector>

namespace pgolf::dist {

struct LaunchSpec {
  std::string exe;                // program every rank runs (pgolf itself: /proc/self/exe)
  std::vector<std::string> args;  // its arguments (without argv[0])
  int nprocs = 1;                 // local ranks = WORLD_SIZE (one node)
  int master_port = 0;            // 0 = a free port picked on 127.0.0.1
  double grace_s = 5;             // after a failure: SIGTERM to the others, SIGKILL to those left after this
  // Where the output of ranks >= 1 goes, one line at a time (default: stderr as "[rank R] line"). Rank 0 keeps
  // the launcher's stdout/stderr (progress bars, the final summary) unless pipe_rank0 is set (tests).
  std::function<void(int rank, const std::string& line)> on_line;
  bool pipe_rank0 = false;
};

// The environment rank `rank` of `spec` gets: `base` (NAME=value entries, e.g. environ) without any earlier rank
// variables, plus RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT=port and
// NCCL_NVLS_ENABLE=0 unless `base` already sets it.
std::vector<std::string> rank_environment(const std::vector<std::string>& base, int rank, int nprocs, int port);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int pick_free_port();

// Runs the ranks and waits for all of them. Returns normally when every rank exited with status 0 (also after a
// forwarded SIGINT/SIGTERM, when the ranks stop cleanly); otherwise throws pgolf::Error naming the first rank that
// failed and how ("rank 1 (pid 123) exited with status 3"), after stopping the others.
void launch_local(const LaunchSpec& spec);

}  // namespace pgolf::dist
