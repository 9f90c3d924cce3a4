// Weight averaging (§6.7 EMA, §6.8 SWA) and its checkpoint state, on the CPU.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/ema.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::train;
namespace fs = std::filesystem;

namespace {

struct One {
  model::ParamTable t;
  One() {
    t.add(model::ParamSpec{"a", Shape{3}, model::OptGroup::AdamScalar, 1.f});
    t.allocate(Device::CPU, DType::F32);
  }
  void set(std::vector<float> v) { t.get("a").value.copy_from(Tensor::from_vector(v, Shape{3})); }
  std::vector<float> get() { return t.get("a").value.to_float_vector(); }
};

}  // namespace

TEST(TrainEma, FollowsTheRecurrenceFromTheInitialWeights) {
  One m;
  OptimSection o;
  o.ema_decay = 0.9;
  WeightAverages avg(m.t, o, Device::CPU);
  ASSERT_TRUE(avg.ema_on());
  EXPECT_FALSE(avg.swa_on());
  m.set({1, 2, 3});
  avg.reset();
  std::vector<double> e = {1, 2, 3};
  const std::vector<std::vector<float>> steps = {{2, 2, 2}, {0, -1, 5}, {4, 4, 4}};
  for (size_t s = 0; s < steps.size(); ++s) {
    m.set(steps[s]);
    avg.after_step(static_cast<int64_t>(s + 1), 1.0);
    for (size_t i = 0; i < 3; ++i) e[i] = 0.9 * e[i] + 0.1 * steps[s][i];
  }
  EXPECT_EQ(avg.resolve_final(), "ema");  // auto -> ema
  auto st = avg.state_tensors();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].first, "ema.a");
  avg.apply_final();
  auto got = m.get();
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], e[i], 1e-6) << i;
}

TEST(TrainSwa, AveragesSnapshotsEveryKWhileLrIsLow) {
  One m;
  OptimSection o;
  o.swa_every = 2;
  o.swa_lr_threshold = 0.5;
  WeightAverages avg(m.t, o, Device::CPU);
  avg.reset();
  m.set({100, 100, 100});
  avg.after_step(1, 0.1);  // not a multiple of 2
  avg.after_step(2, 0.6);  // lr multiplier too high
  EXPECT_EQ(avg.swa_count(), 0);
  EXPECT_EQ(avg.resolve_final(), "live");  // auto with no snapshot
  m.set({1, 2, 3});
  avg.after_step(4, 0.4);
  m.set({3, 2, 0});
  avg.after_step(5, 0.3);  // odd: skipped
  m.set({5, 8, 6});
  avg.after_step(6, 0.3);
  EXPECT_EQ(avg.swa_count(), 2);
  EXPECT_EQ(avg.resolve_final(), "swa");
  avg.apply_final();
  auto got = m.get();
  EXPECT_FLOAT_EQ(got[0], 3.f);
  EXPECT_FLOAT_EQ(got[1], 5.f);
  EXPECT_FLOAT_EQ(got[2], 4.5f);
}

TEST(TrainSwa, HalfEmaHalfSwaAndFallbacks) {
  One m;
  OptimSection o;
  o.ema_decay = 0.5;
  o.swa_every = 1;
  o.swa_lr_threshold = 2.0;
  o.final_weights = "ema_swa";
  WeightAverages avg(m.t, o, Device::CPU);
  m.set({0, 0, 0});
  avg.reset();
  EXPECT_EQ(avg.resolve_final(), "ema");  // no snapshot yet
  m.set({4, 8, 12});
  avg.after_step(1, 1.0);  // ema = 2, 4, 6 ; swa = 4, 8, 12
  EXPECT_EQ(avg.resolve_final(), "ema_swa");
  auto st = avg.state_tensors();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[1].first, "swa.a");
  avg.apply_final();
  auto got = m.get();
  EXPECT_FLOAT_EQ(got[0], 3.f);
  EXPECT_FLOAT_EQ(got[1], 6.f);
  EXPECT_FLOAT_EQ(got[2], 9.f);
}

TEST(TrainEma, OffHoldsNoStateAndKeepsLiveWeights) {
  One m;
  WeightAverages avg(m.t, OptimSection{}, Device::CPU);
  m.set({1, 2, 3});
  avg.reset();
  avg.after_step(1, 0.0);
  EXPECT_TRUE(avg.state_tensors().empty());
  EXPECT_EQ(avg.resolve_final(), "live");
  avg.apply_final();
  EXPECT_EQ(m.get(), (std::vector<float>{1, 2, 3}));
}

TEST(TrainCheckpoint, AveragingStateIsOptionalForReaders) {
  const std::string path = (fs::temp_directory_path() / fmt::format("pgolf_ckpt_avg_{}.bin", ::getpid())).string();
  Tensor p = Tensor::from_vector(std::vector<float>{1, 2}, Shape{2});
  Tensor e = Tensor::from_vector(std::vector<float>{3, 4}, Shape{2});
  Tensor x = Tensor::from_vector(std::vector<float>{5, 6}, Shape{2});
  TrainState s;
  s.step = 7;
  s.swa_count = 3;
  save_checkpoint(path, s, {{"param.a", p}, {"ema.a", e}});
  // A resume with EMA on reads both, and the SWA count.
  Tensor p2 = Tensor::zeros(Shape{2}, DType::F32), e2 = Tensor::zeros(Shape{2}, DType::F32);
  TrainState r = load_checkpoint(path, {{"param.a", p2}, {"ema.a", e2}});
  EXPECT_EQ(r.step, 7);
  EXPECT_EQ(r.swa_count, 3);
  EXPECT_EQ(e2.to_float_vector(), (std::vector<float>{3, 4}));
  // A reader of parameters only (eval, or EMA switched off) skips the averaging state.
  Tensor p3 = Tensor::zeros(Shape{2}, DType::F32);
  load_checkpoint(path, {{"param.a", p3}});
  EXPECT_EQ(p3.to_float_vector(), (std::vector<float>{1, 2}));
  // Asking for averaging state the checkpoint lacks names the tensor.
  Tensor s4 = Tensor::zeros(Shape{2}, DType::F32);
  std::string err = error_of([&] { load_checkpoint(path, {{"param.a", p3}, {"swa.a", s4}}); });
  EXPECT_NE(err.find("'swa.a'"), std::string::npos) << err;
  // Any other extra tensor is still an error.
  save_checkpoint(path, s, {{"param.a", p}, {"adam.m.a", x}});
  err = error_of([&] { load_checkpoint(path, {{"param.a", p3}}); });
  EXPECT_NE(err.find("holds 2 tensors, this run expects 1"), std::string::npos) << err;
  fs::remove(path);
}
