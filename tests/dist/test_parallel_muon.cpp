// Parallel Muon (TECHNIQUES.md §6.2, optim.muon_shard_momentum): the Muon gradients are reduce-scattered so each
// rank sums only the matrices it owns, and momentum lives on the owners only. On the loopback every reduction
// sums the ranks in rank order, so the sharded run must equal the replicated one (all-reduce, every rank holding
// every momentum) bit for bit: parameters, momenta, grad norms, losses, checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "data/file_util.h"
#include "dist/loopback_comm.h"
#include "model/params.h"
#include "test_util.h"
#include "tiny_run.h"
#include "train/optimizer.h"

using namespace pgolf;

namespace {

// Banks of several shapes (counts that do not divide the world sizes, so some banks carry padding) and Adam tensors.
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
  add("emb", Shape{10, 12}, model::OptGroup::AdamEmbed);
  for (int i = 0; i < 5; ++i) {
    add(fmt::format("sq.{}", i), Shape{12, 12}, model::OptGroup::Muon);
    if (i < 3) add(fmt::format("wide.{}", i), Shape{6, 12}, model::OptGroup::Muon);
    if (i < 2) add(fmt::format("tall.{}", i), Shape{20, 12}, model::OptGroup::Muon);
    add(fmt::format("gain.{}", i), Shape{12}, model::OptGroup::AdamScalar);  // Adam tensors between the matrices
  }
  t.allocate(Device::CPU, DType::F32);
  t.init(7);
  return t;
}
constexpr size_t kMatrices = 10;
constexpr size_t kMatrixBytes = (5 * 144 + 3 * 72 + 2 * 240) * sizeof(float);

// Each rank's own gradients (as after its backward): different per rank and per step, large enough to clip.
void fill_grads(model::ParamTable& t, int step, int rank) {
  std::mt19937 g(static_cast<uint32_t>(1000 + 10 * step + rank));
  std::normal_distribution<float> n(0.f, 1.f);
  for (auto& p : t.all()) {
    auto* d = static_cast<float*>(p.grad.data());
    for (int64_t i = 0; i < p.grad.numel(); ++i) d[i] = n(g);
  }
}

struct Result {
  std::vector<std::vector<float>> values, momenta;  // momenta: every matrix's full momentum (gathered)
  std::vector<double> norms;
  size_t momentum_bytes = 0, owned = 0, owned_buffers = 0;
};

// Sharded: the optimizer reduce-scatters the Muon grads; ShardedPresummed: every grad all-reduced first;
// ShardedToOwners: each Muon grad reduced to its owner only (what the overlapped trainer does during the backward).
enum class Mode { Replicated, Sharded, ShardedPresummed, ShardedToOwners };

Result run_steps(dist::Communicator& comm, Mode mode, double clip) {
  model::ParamTable t = make_table();
  train::OptimSection cfg;
  cfg.muon_sharded = true;
  cfg.muon_shard_momentum = mode != Mode::Replicated;
  cfg.muon_momentum_warmup_steps = 2;
  cfg.muon_weight_decay = 0.01;
  cfg.grad_clip_norm = clip;
  train::Optimizer opt(t, cfg, Device::CPU, DType::F32, &comm);
  opt.set_muon_grads_summed(mode != Mode::Sharded);
  EXPECT_EQ(opt.muon_reduces_grads(), mode == Mode::Sharded);
  Result r;
  for (int s = 0; s < 3; ++s) {
    fill_grads(t, s, comm.rank());
    // What the trainer does: all-reduce what the optimizer does not reduce itself (or reduce to the owner).
    for (size_t i = 0; i < t.all().size(); ++i) {
      auto& p = t.all()[i];
      const int owner = opt.muon_grad_owner(i);
      EXPECT_EQ(owner >= 0, mode != Mode::Replicated && p.spec.group == model::OptGroup::Muon);
      if (mode == Mode::ShardedToOwners && owner >= 0) {
        comm.reduce_sum_async(p.grad, owner);
        if (comm.rank() != owner) {  // poison the non-owners' partial sums: the step must not read them
          auto* d = static_cast<float*>(p.grad.data());
          std::fill(d, d + p.grad.numel(), std::numeric_limits<float>::quiet_NaN());
        }
      } else if (!opt.muon_reduces_grads() || p.spec.group != model::OptGroup::Muon) {
        comm.all_reduce_sum(p.grad);
      }
    }
    comm.wait_async();
    opt.step(s, 1.0);
    r.norms.push_back(opt.grad_norm());
  }
  for (auto& p : t.all()) r.values.push_back(p.value.to_float_vector());
  opt.gather_state();
  for (auto& [name, tensor] : opt.state_tensors())
    if (name.rfind("muon.", 0) == 0) r.momenta.push_back(tensor.to_float_vector());
  opt.release_state();
  r.momentum_bytes = opt.muon().momentum_bytes();
  r.owned = opt.muon().owned_count();
  for (const Tensor& b : opt.muon().momentum_buffers()) r.owned_buffers += b.defined() ? 1 : 0;
  return r;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0)
      return false;
  return true;
}

std::vector<Result> run_world(int world, Mode mode, double clip) {
  std::vector<Result> per(static_cast<size_t>(world));
  dist::run_loopback(world, [&](dist::Communicator& c) { per[static_cast<size_t>(c.rank())] = run_steps(c, mode, clip); },
                     20);
  return per;
}

// A checkpoint's tensor bytes (everything after the header): parameters, optimizer states, in a fixed order.
std::string checkpoint_payload(const std::string& run_dir) {
  const std::string f = data::read_file(train::checkpoint_path(run_dir));
  uint64_t hlen = 0;
  std::memcpy(&hlen, f.data() + 8, 8);
  return f.substr(16 + hlen);
}

}  // namespace

TEST(ParallelMuon, OptimizerStepEqualsReplicatedBitForBit) {
  for (double clip : {0.0, 0.5}) {
    for (int world : {2, 3, 4}) {
      const std::vector<Result> ref = run_world(world, Mode::Replicated, clip);
      const std::vector<Result> got = run_world(world, Mode::Sharded, clip);
      const std::vector<Result> pre = run_world(world, Mode::ShardedPresummed, clip);
      const std::vector<Result> own = run_world(world, Mode::ShardedToOwners, clip);
      size_t owned = 0;
      for (int r = 0; r < world; ++r) {
        const auto R = static_cast<size_t>(r);
        SCOPED_TRACE(fmt::format("clip {} world {} rank {}", clip, world, r));
        EXPECT_TRUE(same_bits(got[R].values, ref[0].values)) << "parameters differ";
        EXPECT_TRUE(same_bits(got[R].momenta, ref[0].momenta)) << "momenta differ";
        EXPECT_EQ(got[R].norms, ref[0].norms);
        EXPECT_TRUE(same_bits(pre[R].values, ref[0].values)) << "presummed: parameters differ";
        EXPECT_TRUE(same_bits(pre[R].momenta, ref[0].momenta)) << "presummed: momenta differ";
        EXPECT_TRUE(same_bits(own[R].values, ref[0].values)) << "reduced to owners: parameters differ";
        EXPECT_TRUE(same_bits(own[R].momenta, ref[0].momenta)) << "reduced to owners: momenta differ";
        EXPECT_EQ(own[R].norms, ref[0].norms);
        if (clip > 0) EXPECT_GT(got[R].norms[0], clip);  // the clip acts
        // Momentum memory: the replicated run holds every matrix; a sharded rank ceil(k / world) slots per bank.
        EXPECT_EQ(ref[R].momentum_bytes, kMatrixBytes);
        const auto per_bank = [&](size_t k) { return (k + static_cast<size_t>(world) - 1) / static_cast<size_t>(world); };
        EXPECT_EQ(got[R].momentum_bytes, (per_bank(5) * 144 + per_bank(3) * 72 + per_bank(2) * 240) * sizeof(float));
        EXPECT_EQ(got[R].owned_buffers, got[R].owned);  // momentum buffers for the owned matrices only
        owned += got[R].owned;
      }
      EXPECT_EQ(owned, kMatrices);
    }
  }
}

// One bank of 10 equal matrices over worlds that divide it: exactly 1 / world of the momentum per rank.
TEST(ParallelMuon, MomentumMemoryIsOneOverWorldWithoutPadding) {
  for (int world : {2, 5}) {
    dist::run_loopback(world, [&](dist::Communicator& c) {
      model::ParamTable t;
      for (int i = 0; i < 10; ++i) {
        model::ParamSpec s;
        s.name = fmt::format("m.{}", i);
        s.shape = Shape{8, 8};
        s.group = model::OptGroup::Muon;
        t.add(s);
      }
      t.allocate(Device::CPU, DType::F32);
      train::OptimSection on, off;
      on.muon_shard_momentum = true;
      train::Optimizer sharded(t, on, Device::CPU, DType::F32, &c), replicated(t, off, Device::CPU, DType::F32, &c);
      EXPECT_EQ(sharded.muon().momentum_bytes() * static_cast<size_t>(world), replicated.muon().momentum_bytes());
    });
  }
}

TEST(ParallelMuon, WorldOfOneIsANoOp) {
  auto run = [](dist::Communicator* comm, bool shard) {
    model::ParamTable t = make_table();
    train::OptimSection cfg;
    cfg.muon_shard_momentum = shard;
    train::Optimizer opt(t, cfg, Device::CPU, DType::F32, comm);
    EXPECT_FALSE(opt.muon().shards_momentum());
    EXPECT_FALSE(opt.muon_reduces_grads());
    fill_grads(t, 0, 0);
    opt.step(0, 1.0);
    std::vector<std::vector<float>> v;
    for (auto& p : t.all()) v.push_back(p.value.to_float_vector());
    return v;
  };
  const auto ref = run(nullptr, false);
  EXPECT_TRUE(same_bits(run(nullptr, true), ref));
  dist::run_loopback(1, [&](dist::Communicator& c) { EXPECT_TRUE(same_bits(run(&c, true), ref)); });
}

TEST(ParallelMuon, NeedsMuonSharded) {
  test::TinyData d("pmuon_cfg");
  train::Config c = d.cfg;
  c.optim.muon_sharded = false;
  c.optim.muon_shard_momentum = true;
  const std::string e = test::error_of([&] { train::validate(c, 2); });
  EXPECT_NE(e.find("optim.muon_shard_momentum = true needs optim.muon_sharded = true"), std::string::npos) << e;
  const std::string text = train::to_toml(d.cfg);
  EXPECT_NE(text.find("muon_shard_momentum = false"), std::string::npos) << "not in the resolved config";
}

// Whole training runs, worlds 2, 3 and 4, with and without clipping: Parallel Muon with the overlapped reduction
// (each Muon matrix reduced to its owner during the backward, the rest all-reduced block by block) and with the
// packed one (one all-reduce of the rest after the backward, then the optimizer's reduce-scatter) give the same
// losses, validation and final checkpoint as the replicated run.
TEST(ParallelMuon, TrainingEqualsReplicatedBitForBit) {
  test::TinyData d("pmuon");
  for (int world : {2, 3, 4}) {
    for (double clip : {0.0, 0.05}) {  // the global norm of the clip: owners' matrices + Adam part
      train::Config off = d.cfg;
      off.optim.grad_clip_norm = clip;
      train::Config on_ov = off;
      on_ov.optim.muon_shard_momentum = true;
      train::Config on_pk = on_ov;
      on_pk.train.overlap_grad_reduce = false;
      const std::string tag = fmt::format("{}{}", world, clip > 0 ? "c" : "");
      SCOPED_TRACE(tag);
      const test::TinyRun a = d.run(world, false, "off" + tag, off);
      const test::TinyRun b = d.run(world, false, "onov" + tag, on_ov);
      const test::TinyRun c = d.run(world, false, "onpk" + tag, on_pk);
      ASSERT_EQ(a.losses.size(), 4u);
      EXPECT_EQ(a.losses, b.losses);
      EXPECT_EQ(a.losses, c.losses);
      EXPECT_EQ(a.result.val_loss, b.result.val_loss);
      EXPECT_EQ(a.result.val_loss, c.result.val_loss);
      const std::string ref = checkpoint_payload(d.dir + "/off" + tag);
      EXPECT_EQ(ref, checkpoint_payload(d.dir + "/onov" + tag)) << "overlapped: final weights or optimizer state differ";
      EXPECT_EQ(ref, checkpoint_payload(d.dir + "/onpk" + tag)) << "packed: final weights or optimizer state differ";
    }
  }
  // The log says how the gradients travel and what the ranks hold.
  EXPECT_NE(data::read_file(d.dir + "/onov2/train.log").find("parallel muon: gradients reduced to their owners during "
                                                             "the backward"),
            std::string::npos);
  EXPECT_NE(data::read_file(d.dir + "/onpk2/train.log").find("parallel muon: gradients reduce-scattered after the "
                                                             "backward"),
            std::string::npos);
}

namespace {

// Forwards every call to the loopback and records the collectives in the order this rank issued them.
class RecordingComm final : public dist::Communicator {
 public:
  struct Call {
    std::string op;
    int64_t numel = 0;
    int root = -1;
  };
  explicit RecordingComm(dist::Communicator& inner) : c_(inner) {}
  int rank() const override { return c_.rank(); }
  int world() const override { return c_.world(); }
  std::string name() const override { return c_.name(); }
  double timeout_s() const override { return c_.timeout_s(); }
  void all_reduce_sum(const Tensor& b) override { log("all_reduce_sum", b.numel()); c_.all_reduce_sum(b); }
  void all_reduce_sum_async(const Tensor& b) override { log("all_reduce_sum_async", b.numel()); c_.all_reduce_sum_async(b); }
  void reduce_sum_async(const Tensor& b, int root) override {
    log("reduce_sum_async", b.numel(), root);
    c_.reduce_sum_async(b, root);
  }
  void group_begin() override { log("group_begin", 0); c_.group_begin(); }
  void group_end() override { log("group_end", 0); c_.group_end(); }
  void wait_async() override { log("wait_async", 0); c_.wait_async(); }
  void accumulate_sum(const Tensor& a, const Tensor& b) override { log("accumulate_sum", b.numel()); c_.accumulate_sum(a, b); }
  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    log("reduce_scatter_sum", in.numel());
    c_.reduce_scatter_sum(in, out);
  }
  void all_gather(const Tensor& in, const Tensor& out) override { log("all_gather", in.numel()); c_.all_gather(in, out); }
  void broadcast(const Tensor& b, int root) override { log("broadcast", b.numel(), root); c_.broadcast(b, root); }
  void barrier() override { log("barrier", 0); c_.barrier(); }
  std::vector<Call> calls;

 private:
  void log(const char* op, int64_t n, int root = -1) { calls.push_back({op, n, root}); }
  dist::Communicator& c_;
};

std::vector<std::vector<RecordingComm::Call>> record_run(const test::TinyData& d, const train::Config& cfg,
                                                         const std::string& name, int world) {
  train::Config c = cfg;
  c.train.grad_accum = test::kMicroSteps / world;
  std::vector<std::vector<RecordingComm::Call>> per(static_cast<size_t>(world));
  dist::run_loopback(world, [&](dist::Communicator& inner) {
    RecordingComm rec(inner);
    train::RunOptions o;
    o.run_dir = d.dir + "/" + name;
    o.quiet = true;
    o.comm = &rec;
    train::run_training(c, o);
    per[static_cast<size_t>(inner.rank())] = rec.calls;
  }, 60);
  return per;
}

}  // namespace

// With the overlap, the Muon matrices are reduced to their owners while the backward runs (the reductions are
// issued from the backward's grad-ready reports, in several groups, before the loss sum that follows the backward)
// and no reduce-scatter runs after it; without the overlap the optimizer reduce-scatters and nothing is reduced to
// an owner.
TEST(ParallelMuon, OverlapReducesMuonMatricesDuringTheBackward) {
  test::TinyData d("pmuon_rec");
  train::Config on = d.cfg;
  on.optim.muon_shard_momentum = true;
  size_t n_muon = 0;  // Muon matrices: the first step's count, the same every step and world
  for (int world : {2, 3}) {
    SCOPED_TRACE(fmt::format("world {}", world));
    const auto per = record_run(d, on, fmt::format("ov{}", world), world);
    for (int r = 0; r < world; ++r) {
      const auto& calls = per[static_cast<size_t>(r)];
      int steps = 0;
      size_t since_wait = 0, groups_with_reduce = 0;
      bool in_group = false, group_has_reduce = false, loss_summed = false;
      std::set<int> roots;
      for (const auto& call : calls) {
        EXPECT_NE(call.op, "reduce_scatter_sum") << "a post-backward reduce-scatter ran with the overlap on";
        if (call.op == "group_begin") {
          in_group = true;
          group_has_reduce = false;
        } else if (call.op == "group_end") {
          in_group = false;
          groups_with_reduce += group_has_reduce ? 1 : 0;
        } else if (call.op == "reduce_sum_async") {
          EXPECT_TRUE(in_group) << "reduce outside a grad-ready report";
          EXPECT_FALSE(loss_summed) << "Muon matrix reduced after the backward returned";
          group_has_reduce = true;
          roots.insert(call.root);
          ++since_wait;
        } else if (call.op == "all_reduce_sum" && call.numel == 1 && since_wait > 0) {
          loss_summed = true;  // the loss sum: issued right after forward_backward returned
        } else if (call.op == "wait_async" && since_wait > 0) {
          EXPECT_TRUE(loss_summed);
          if (n_muon == 0) n_muon = since_wait;
          EXPECT_EQ(since_wait, n_muon) << "every Muon matrix is reduced once per step";
          EXPECT_GE(groups_with_reduce, 2u) << "all Muon reductions came in one report (not block by block)";
          ++steps;
          since_wait = groups_with_reduce = 0;
          loss_summed = false;
        }
      }
      EXPECT_GE(steps, 4) << "rank " << r;  // the run's 4 steps (plus the compile warm-up's)
      EXPECT_EQ(roots.size(), static_cast<size_t>(world)) << "every rank owns some matrices";
    }
    // Without the overlap: the packed all-reduce and the optimizer's reduce-scatter, no reduce to owners.
    train::Config pk = on;
    pk.train.overlap_grad_reduce = false;
    const auto packed = record_run(d, pk, fmt::format("pk{}", world), world);
    size_t rs = 0;
    for (const auto& call : packed[0]) {
      EXPECT_NE(call.op, "reduce_sum_async");
      rs += call.op == "reduce_scatter_sum" ? 1 : 0;
    }
    EXPECT_GT(rs, 0u);
  }
  EXPECT_GT(n_muon, 0u);
}

// The loopback's reduce to one root: the root receives the rank-order sum, the others keep their input.
TEST(ParallelMuon, LoopbackReduceToRoot) {
  for (int world : {2, 3, 4}) {
    for (int root = 0; root < world; ++root) {
      dist::run_loopback(world, [&](dist::Communicator& c) {
        std::vector<float> mine = {0.1f * static_cast<float>(c.rank() + 1), 1e8f, -1e8f + static_cast<float>(c.rank())};
        Tensor t = Tensor::zeros(Shape{3}, DType::F32, Device::CPU), all = Tensor::zeros(Shape{3}, DType::F32, Device::CPU);
        t.copy_from(Tensor::from_blob(mine.data(), Shape{3}, DType::F32, Device::CPU));
        all.copy_from(t);
        c.all_reduce_sum(all);
        c.reduce_sum_async(t, root);
        c.wait_async();
        const std::vector<float> got = t.to_float_vector();
        const std::vector<float> want = c.rank() == root ? all.to_float_vector() : mine;
        EXPECT_EQ(std::memcmp(got.data(), want.data(), 3 * sizeof(float)), 0) << "rank " << c.rank();
      });
    }
  }
}

// Exact accumulation sums every gradient (the owners copy theirs): still world 2 = world 1 bit for bit.
TEST(ParallelMuon, ExactAccumulationStillMatchesOneRank) {
  test::TinyData d("pmuon_exact");
  train::Config on = d.cfg;
  on.optim.muon_shard_momentum = true;
  const test::TinyRun ref = d.run(1, true, "w1");
  const test::TinyRun got = d.run(2, true, "w2", on);
  EXPECT_EQ(got.losses, ref.losses);
  EXPECT_EQ(got.result.val_loss, ref.result.val_loss);
}

// Checkpoints hold the gathered momenta: an interrupted sharded run resumes bit-identically, and the same
// checkpoint resumes a replicated run (and the other way round) because the file format does not change.
TEST(ParallelMuon, ResumeIsBitIdentical) {
  test::TinyData d("pmuon_resume");
  d.cfg.train.iterations = 5;
  train::Config on = d.cfg;
  on.optim.muon_shard_momentum = true;
  const int world = 2;
  auto run = [&](const train::Config& c, const std::string& name, int interrupt_after, bool resume) {
    train::Config cc = c;
    cc.train.grad_accum = test::kMicroSteps / world;
    std::vector<double> losses;
    dist::run_loopback(world, [&](dist::Communicator& comm) {
      train::RunOptions o;
      o.run_dir = d.dir + "/" + name;
      o.quiet = true;
      o.comm = &comm;
      o.interrupt_after_steps = interrupt_after;
      o.resume = resume;
      if (comm.rank() == 0) o.on_step = [&losses](int64_t, double l) { losses.push_back(l); };
      train::run_training(cc, o);
    }, 60);
    return losses;
  };
  const std::vector<double> full = run(on, "full", -1, false);
  ASSERT_EQ(full.size(), 5u);
  for (const auto& [first, second] : {std::pair{&on, &on}, std::pair{&on, &d.cfg}, std::pair{&d.cfg, &on}}) {
    const std::string name = fmt::format("split{}{}", first == &on ? "s" : "r", second == &on ? "s" : "r");
    std::vector<double> part = run(*first, name, 2, false);
    ASSERT_EQ(part.size(), 2u);
    const std::vector<double> rest = run(*second, name, -1, true);
    part.insert(part.end(), rest.begin(), rest.end());
    EXPECT_EQ(part, full) << name;
    EXPECT_EQ(checkpoint_payload(d.dir + "/full"), checkpoint_payload(d.dir + "/" + name)) << name;
  }
}
