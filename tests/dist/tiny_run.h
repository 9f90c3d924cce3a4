#pragma once
// A tiny CPU training setup shared by the data-parallel tests: random shards in a temp folder and a 2-layer model
// whose every optimizer step spans kMicroSteps global micro-steps (divisible by world sizes 1, 2, 3 and 4).
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/shard.h"
#include "dist/loopback_comm.h"
#include "train/config.h"
#include "train/trainer.h"
#include "test_util.h"

namespace pgolf::test {

constexpr int64_t kMicroSteps = 12;

struct TinyRun {
  std::vector<double> losses;  // per step, as rank 0 saw them
  train::RunResult result;     // rank 0's
};

struct TinyData {
  std::string dir;
  train::Config cfg;
  explicit TinyData(const std::string& tag = "dist") {
    namespace fs = std::filesystem;
    dir = (fs::temp_directory_path() / fmt::format("pgolf_{}_{}", tag, ::getpid())).string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    cfg = tiny_training(dir, "d", 11, 5, 4, {5000}, 1000);
    cfg.train.train_batch_tokens = kMicroSteps * 2 * 16;  // 2 rows of 16 per micro-step
    cfg.train.iterations = 4;
    cfg.train.warmdown_iters = 2;
    cfg.train.warmup_steps = 1;
    cfg.train.val_batch_tokens = 64;
    cfg.train.val_max_tokens = 256;
    cfg.train.int8_roundtrip = false;
    cfg.optim.muon_momentum_warmup_steps = 2;
  }
  ~TinyData() { std::filesystem::remove_all(dir); }

  // world 1 without `exact` runs without a communicator; every other case runs on loopback ranks, and every rank
  // must report the same losses and validation results as rank 0.
  TinyRun run(int world, bool exact, const std::string& name, train::Config c) const {
    c.train.grad_accum = kMicroSteps / world;
    std::vector<TinyRun> per_rank(static_cast<size_t>(world));
    auto body = [&](dist::Communicator* comm) {
      train::RunOptions o;
      o.run_dir = dir + "/" + name;
      o.quiet = true;
      o.comm = comm;
      o.exact_accumulation = exact;
      auto& mine = per_rank[static_cast<size_t>(comm ? comm->rank() : 0)];
      o.on_step = [&mine](int64_t, double l) { mine.losses.push_back(l); };
      mine.result = train::run_training(c, o);
    };
    if (world == 1 && !exact) {
      body(nullptr);
    } else {
      dist::run_loopback(world, [&](dist::Communicator& comm) { body(&comm); }, 60);
    }
    for (int r = 1; r < world; ++r) {
      EXPECT_EQ(per_rank[static_cast<size_t>(r)].losses, per_rank[0].losses) << "rank " << r;
      EXPECT_EQ(per_rank[static_cast<size_t>(r)].result.val_loss, per_rank[0].result.val_loss) << "rank " << r;
    }
    return per_rank[0];
  }
  TinyRun run(int world, bool exact, const std::string& name) const { return run(world, exact, name, cfg); }
};

}  // namespace pgolf::test
