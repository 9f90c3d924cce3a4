// pgolf launch: the local launcher on /bin/sh ranks (environment, output prefixes, failure, signals), the CLI in
// loopback mode through the real `train` command, and the built binary in process mode.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/launch.h"
#include "tiny_run.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;

namespace {

using Clock = std::chrono::steady_clock;

struct Lines {
  std::mutex m;
  std::map<int, std::vector<std::string>> by_rank;
  void add(int r, const std::string& l) {
    std::lock_guard<std::mutex> lk(m);
    by_rank[r].push_back(l);
  }
  bool has(int r, const std::string& s) {
    std::lock_guard<std::mutex> lk(m);
    for (const auto& l : by_rank[r])
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

dist::LaunchSpec sh(int n, const std::string& script, Lines& lines) {
  dist::LaunchSpec s;
  s.exe = "/bin/sh";
  s.args = {"-c", script};
  s.nprocs = n;
  s.grace_s = 0.5;
  s.pipe_rank0 = true;
  s.on_line = [&lines](int r, const std::string& l) { lines.add(r, l); };
  return s;
}

}  // namespace

TEST(DistLaunch, RankEnvironment) {
  const auto env = dist::rank_environment({"PATH=/bin", "RANK=7", "MASTER_PORT=1", "OMPI_COMM_WORLD_RANK=3"}, 2, 4, 29999);
  auto has = [&](const std::string& e) { return std::find(env.begin(), env.end(), e) != env.end(); };
  for (const char* e : {"PATH=/bin", "RANK=2", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=4",
                        "MASTER_ADDR=127.0.0.1", "MASTER_PORT=29999", "NCCL_NVLS_ENABLE=0"})
    EXPECT_TRUE(has(e)) << e;
  EXPECT_FALSE(has("RANK=7"));
  EXPECT_FALSE(has("OMPI_COMM_WORLD_RANK=3"));  // would contradict RANK in rank_info_from_env
  const auto kept = dist::rank_environment({"NCCL_NVLS_ENABLE=1"}, 0, 1, 1);
  EXPECT_EQ(std::count(kept.begin(), kept.end(), "NCCL_NVLS_ENABLE=1"), 1);
  EXPECT_EQ(std::count(kept.begin(), kept.end(), "NCCL_NVLS_ENABLE=0"), 0);
}

TEST(DistLaunch, StartsRanksWithTheirEnvironmentAndCollectsOutput) {
  Lines lines;
  dist::launch_local(sh(3, "echo rank=$RANK world=$WORLD_SIZE local=$LOCAL_RANK/$LOCAL_WORLD_SIZE "
                           "at=$MASTER_ADDR:$MASTER_PORT nvls=$NCCL_NVLS_ENABLE; echo to-stderr >&2; printf tail",
                        lines));
  std::string port;
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(lines.by_rank[r].size(), 3u) << "rank " << r;
    const std::string& l = lines.by_rank[r][0];
    EXPECT_NE(l.find(fmt::format("rank={} world=3 local={}/3 at=127.0.0.1:", r, r)), std::string::npos) << l;
    EXPECT_NE(l.find("nvls=0"), std::string::npos) << l;
    const std::string p = l.substr(l.find("127.0.0.1:") + 10, l.find(" nvls") - l.find("127.0.0.1:") - 10);
    if (r == 0) port = p;
    EXPECT_EQ(p, port) << "every rank must get the same MASTER_PORT";
    EXPECT_TRUE(lines.has(r, "to-stderr"));
    EXPECT_EQ(lines.by_rank[r][2], "tail");  // an unterminated last line is not lost
  }
  EXPECT_GT(std::stoi(port), 0);
}

TEST(DistLaunch, FailingRankStopsTheOthersAndIsNamed) {
  Lines lines;
  const auto t = Clock::now();
  // Rank 1 fails; rank 0 ignores SIGTERM (like a rank stuck in a collective) and must be killed after the grace;
  // rank 2 stops on SIGTERM.
  const std::string err = error_of([&] {
    dist::launch_local(sh(3, "if [ $RANK = 1 ]; then sleep 0.2; exit 3; fi; "
                             "if [ $RANK = 0 ]; then trap '' TERM; fi; i=0; while [ $i -lt 300 ]; do sleep 0.1; "
                             "i=$((i+1)); done",
                          lines));
  });
  const double s = std::chrono::duration<double>(Clock::now() - t).count();
  EXPECT_NE(err.find("rank 1 of 3"), std::string::npos) << err;
  EXPECT_NE(err.find("exited with status 3"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 0 was killed by signal 9"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 2 was killed by signal 15"), std::string::npos) << err;
  EXPECT_LT(s, 10.0);
}

TEST(DistLaunch, ForwardsSigintToEveryRank) {
  Lines lines;
  std::atomic<bool> done{false};
  std::string err;
  std::thread launcher([&] {
    err = error_of([&] {
      dist::launch_local(sh(2, "trap 'echo got-INT; exit 0' INT; echo ready; i=0; while [ $i -lt 300 ]; do "
                               "sleep 0.1; i=$((i+1)); done; exit 9",
                            lines));
    });
    done = true;
  });
  const auto t = Clock::now();
  while (!(lines.has(0, "ready") && lines.has(1, "ready")) && Clock::now() - t < std::chrono::seconds(10))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // The launcher's handler is installed before the ranks start, so this reaches it, not the default action.
  ::kill(::getpid(), SIGINT);
  launcher.join();
  EXPECT_TRUE(done);
  EXPECT_EQ(err, "");
  EXPECT_TRUE(lines.has(0, "got-INT"));
  EXPECT_TRUE(lines.has(1, "got-INT"));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 10.0);
}

TEST(DistLaunch, MissingProgramIsReported) {
  dist::LaunchSpec s;
  s.exe = "/nonexistent/pgolf";
  s.nprocs = 2;
  EXPECT_NE(error_of([&] { dist::launch_local(s); }).find("cannot execute /nonexistent/pgolf"), std::string::npos);
}

// `pgolf launch --gpus 2 --loopback -- train ...` through the CLI: two loopback ranks run the real train command.
TEST(DistLaunchCli, LoopbackRunsTheTrainCommandOnRanks) {
  test::TinyData d("launchcli");
  train::Config c = d.cfg;
  c.train.grad_accum = test::kMicroSteps / 2;
  c.train.iterations = 2;
  const std::string cfg_file = d.dir + "/cfg.toml";
  std::ofstream(cfg_file) << train::to_toml(c);
  const std::string run_dir = d.dir + "/run";
  CLI::App app;
  cli::add_launch_command(app);
  std::vector<std::string> args{"pgolf", "launch", "--gpus", "2", "--loopback", "--timeout", "20", "--",
                                "train",  "-c",     cfg_file, "--run-dir", run_dir, "-q"};
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  std::ifstream log(run_dir + "/train.log");
  std::stringstream ss;
  ss << log.rdbuf();
  EXPECT_NE(ss.str().find("data parallel: 2 rank(s) over loopback"), std::string::npos) << ss.str();
  EXPECT_TRUE(std::filesystem::exists(run_dir + "/checkpoint.bin"));

  // A bad train argument on the ranks fails the launch naming the rank.
  CLI::App bad;
  cli::add_launch_command(bad);
  std::vector<const char*> bad_argv{"pgolf", "launch", "-n", "2", "--loopback", "--", "train", "--no-such-flag"};
  const std::string err = error_of([&] { bad.parse(static_cast<int>(bad_argv.size()), bad_argv.data()); });
  EXPECT_NE(err.find("bad `train` arguments"), std::string::npos) << err;
}

// Process mode with the built binary: `pgolf launch --gpus 2 -- version` (no GPU needed).
TEST(DistLaunchCli, ProcessModeRunsTheBinaryOnEveryRank) {
  const std::string exe = std::string(PGOLF_BINARY_DIR) + "/pgolf";
  if (!std::filesystem::exists(exe)) GTEST_SKIP() << exe << " not built";
  FILE* p = ::popen((exe + " launch --gpus 2 -- version 2>&1; echo exit=$?").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  EXPECT_NE(out.find("[rank 1] "), std::string::npos) << out;
  EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
  FILE* q = ::popen((exe + " launch --gpus 2 -- no-such-command 2>&1; echo exit=$?").c_str(), "r");
  ASSERT_NE(q, nullptr);
  std::string bad;
  while (std::fgets(buf, sizeof buf, q)) bad += buf;
  ::pclose(q);
  EXPECT_NE(bad.find(" of 2 (pid "), std::string::npos) << bad;  // whichever rank is reaped first is named
  EXPECT_EQ(bad.find("exit=0"), std::string::npos) << bad;
}
