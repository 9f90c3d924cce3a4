// Data-parallel training over the loopback communicator against one rank with gradient accumulation.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <random>

#include "data/shard.h"
#include "dist/loopback_comm.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace pgolf;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMicroSteps = 12;  // global micro-steps per optimizer step: divisible by 1, 2, 3 and 4

struct TinyData {
  std::string dir;
  train::Config cfg;
  TinyData() {
    dir = (fs::temp_directory_path() / fmt::format("pgolf_dist_{}", ::getpid())).string();
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
  ~TinyData() { fs::remove_all(dir); }

  // Per-step train losses seen by rank 0 (every rank must report the same ones).
  std::vector<double> run(int world, bool exact, const std::string& name) const {
    train::Config c = cfg;
    c.train.grad_accum = kMicroSteps / world;
    std::vector<std::vector<double>> per_rank(static_cast<size_t>(world));
    auto body = [&](dist::Communicator* comm) {
      train::RunOptions o;
      o.run_dir = dir + "/" + name;
      o.quiet = true;
      o.comm = comm;
      o.exact_accumulation = exact;
      auto& mine = per_rank[static_cast<size_t>(comm ? comm->rank() : 0)];
      o.on_step = [&mine](int64_t, double l) { mine.push_back(l); };
      train::run_training(c, o);
    };
    if (world == 1 && !exact) {
      body(nullptr);
    } else {
      dist::run_loopback(world, [&](dist::Communicator& comm) { body(&comm); }, 60);
    }
    for (int r = 1; r < world; ++r) EXPECT_EQ(per_rank[static_cast<size_t>(r)], per_rank[0]) << "rank " << r;
    return per_rank[0];
  }
};

}  // namespace

// Exact accumulation: every micro-step's fresh gradient is added into one accumulator in global micro-step order,
// which the loopback reproduces across ranks, so world W x (12 / W) micro-steps equals world 1 x 12 bit for bit.
TEST(DistDataParallel, LoopbackWorldsAreBitIdenticalWithExactAccumulation) {
  TinyData d;
  const std::vector<double> ref = d.run(1, /*exact=*/true, "w1");
  ASSERT_EQ(ref.size(), 4u);
  EXPECT_LT(ref.back(), ref.front());
  for (int world : {2, 3, 4}) EXPECT_EQ(d.run(world, true, fmt::format("w{}", world)), ref) << "world " << world;
}

// Default (fused) accumulation, the path NCCL runs use: the sum order differs, losses agree to rounding.
TEST(DistDataParallel, LoopbackWorldsMatchGradAccumulationWithinRounding) {
  TinyData d;
  const std::vector<double> ref = d.run(1, /*exact=*/false, "plain1");
  for (int world : {2, 4}) {
    const std::vector<double> got = d.run(world, false, fmt::format("plain{}", world));
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_NEAR(got[i], ref[i], 1e-5 * std::abs(ref[i])) << "world " << world << " step " << i + 1;
  }
  // Only rank 0 writes the run folder's files.
  EXPECT_TRUE(fs::exists(d.dir + "/plain2/train.log"));
  EXPECT_TRUE(fs::exists(d.dir + "/plain2/checkpoint.bin"));
}
