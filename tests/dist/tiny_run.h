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
    std::mt19937 g(11);
    std::vector<uint16_t> toks(6000);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>((i * 5 + (g() % 4)) % 48);
    data::write_shard(dir + "/data/d_train_000000.bin", toks.data(), 5000);
    data::write_shard(dir + "/data/d_val_000000.bin", toks.data() + 5000, 1000);
    cfg.model.vocab_size = 64;
    cfg.model.num_layers = 2;
    cfg.model.model_dim = 32;
    cfg.model.num_heads = 2;
    cfg.model.num_kv_heads = 1;
    cfg.train.seq_len = 16;
    cfg.train.train_batch_tokens = kMicroSteps * 2 * 16;  // 2 rows of 16 per micro-step
    cfg.train.iterations = 4;
    cfg.train.max_wallclock_seconds = 0;
    cfg.train.lr_schedule = "step";
    cfg.train.warmdown_iters = 2;
    cfg.train.warmup_steps = 1;
    cfg.train.val_loss_every = 0;
    cfg.train.val_batch_tokens = 64;
    cfg.train.val_max_tokens = 256;
    cfg.train.train_log_every = 0;
    cfg.train.int8_roundtrip = false;
    cfg.train.device = "cpu";
    cfg.optim.muon_momentum_warmup_steps = 2;
    cfg.data.train = dir + "/data/d_train_*.bin";
    cfg.data.val = dir + "/data/d_val_*.bin";
    cfg.data.tokenizer = "";
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
