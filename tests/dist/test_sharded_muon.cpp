// Sharded Muon (TECHNIQUES.md §6.2): each loopback rank orthogonalises its share of the matrices and the updates
// are all-gathered; the parameters after several steps must equal the one-rank optimizer's bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "dist/loopback_comm.h"
#include "model/params.h"
#include "tiny_run.h"
#include "train/optimizer.h"

using namespace pgolf;

namespace {

// Banks of several shapes, wide and tall, with counts that do not divide the world sizes, plus an Adam vector.
model::ParamTable make_table() {
  model::ParamTable t;
  auto add = [&](const std::string& name, Shape shape, model::OptGroup g) {
    model::ParamSpec s;
    s.name = name;
    s.shape = shape;
    s.group = g;
    s.init = model::InitKind::Normal;
    s.init_value = 0.05f;
    t.add(s);
  };
  for (int i = 0; i < 5; ++i) add(fmt::format("sq.{}", i), Shape{12, 12}, model::OptGroup::Muon);
  for (int i = 0; i < 3; ++i) add(fmt::format("wide.{}", i), Shape{6, 12}, model::OptGroup::Muon);
  for (int i = 0; i < 2; ++i) add(fmt::format("tall.{}", i), Shape{20, 12}, model::OptGroup::Muon);
  add("gain", Shape{12}, model::OptGroup::AdamScalar);
  t.allocate(Device::CPU, DType::F32);
  t.init(7);
  return t;
}

// The same gradients on every rank (as after the all-reduce), different every step.
void fill_grads(model::ParamTable& t, int step) {
  std::mt19937 g(static_cast<uint32_t>(1000 + step));
  std::normal_distribution<float> n(0.f, 1.f);
  for (auto& p : t.all()) {
    auto* d = static_cast<float*>(p.grad.data());
    for (int64_t i = 0; i < p.grad.numel(); ++i) d[i] = n(g);
  }
}

struct Result {
  std::vector<std::vector<float>> values, momenta;
  size_t owned = 0;
  bool sharded = false;
};

Result run_steps(dist::Communicator* comm, bool sharded_cfg) {
  model::ParamTable t = make_table();
  train::OptimSection cfg;
  cfg.muon_sharded = sharded_cfg;
  cfg.muon_momentum_warmup_steps = 2;
  cfg.muon_weight_decay = 0.01;
  train::Optimizer opt(t, cfg, Device::CPU, DType::F32, comm);
  for (int s = 0; s < 3; ++s) {
    fill_grads(t, s);
    opt.step(s, 1.0);
  }
  Result r;
  for (auto& p : t.all()) r.values.push_back(p.value.to_float_vector());
  for (auto& m : opt.muon().momentum_buffers()) r.momenta.push_back(m.to_float_vector());
  r.owned = opt.muon().owned_count();
  r.sharded = opt.muon().sharded();
  return r;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0)
      return false;
  return true;
}

}  // namespace

TEST(DistMuon, ShardedStepIsBitIdenticalToOneRank) {
  const Result ref = run_steps(nullptr, true);
  EXPECT_FALSE(ref.sharded);
  EXPECT_EQ(ref.owned, 10u);
  for (int world : {2, 3, 4}) {
    std::vector<Result> per(static_cast<size_t>(world));
    dist::run_loopback(world, [&](dist::Communicator& c) { per[static_cast<size_t>(c.rank())] = run_steps(&c, true); }, 20);
    size_t total = 0, lo = 100, hi = 0;
    for (int r = 0; r < world; ++r) {
      const Result& got = per[static_cast<size_t>(r)];
      EXPECT_TRUE(got.sharded) << "world " << world;
      EXPECT_TRUE(same_bits(got.values, ref.values)) << "world " << world << " rank " << r << ": parameters differ";
      EXPECT_TRUE(same_bits(got.momenta, ref.momenta)) << "world " << world << " rank " << r << ": momenta differ";
      total += got.owned;
      lo = std::min(lo, got.owned);
      hi = std::max(hi, got.owned);
    }
    // Every matrix is orthogonalised by exactly one rank, and the work is dealt evenly (round robin).
    EXPECT_EQ(total, 10u) << "world " << world;
    EXPECT_LE(hi - lo, 1u) << "world " << world;
  }
}

TEST(DistMuon, SwitchOffKeepsEveryRankDoingEverything) {
  std::vector<Result> per(2);
  dist::run_loopback(2, [&](dist::Communicator& c) { per[static_cast<size_t>(c.rank())] = run_steps(&c, false); }, 20);
  const Result ref = run_steps(nullptr, false);
  for (const Result& r : per) {
    EXPECT_FALSE(r.sharded);
    EXPECT_EQ(r.owned, 10u);
    EXPECT_TRUE(same_bits(r.values, ref.values));
  }
}

// Whole training runs: sharded and unsharded Muon give the same losses at world 2 (exact accumulation).
TEST(DistMuon, TrainingWithAndWithoutShardingAgreeBitForBit) {
  test::TinyData d("muon");
  train::Config off = d.cfg;
  off.optim.muon_sharded = false;
  const test::TinyRun a = d.run(2, /*exact=*/true, "on");
  const test::TinyRun b = d.run(2, /*exact=*/true, "off", off);
  ASSERT_EQ(a.losses.size(), 4u);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.result.val_loss, b.result.val_loss);
}
