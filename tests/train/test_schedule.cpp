#include <gtest/gtest.h>

#include "train/schedule.h"

using namespace pgolf::train;

TEST(TrainSchedule, WallclockWarmdownOfTheBaseline) {
  ScheduleParams p;  // 600 s cap, warmdown 1200 iterations
  // 100 ms/step: W = 120 s. At 400 s elapsed 200 s remain > W -> 1.
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 4000, 400000), 1.0);
  // At 540 s: 60 s remain of W = 1200 * 540000/5400 = 120 s -> 0.5.
  EXPECT_NEAR(lr_multiplier(p, 5400, 540000), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 6000, 600000), 0.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 0, 0), 1.0);
}

TEST(TrainSchedule, StepWarmdownWithoutCap) {
  ScheduleParams p;
  p.iterations = 100;
  p.warmdown_iters = 20;
  p.by_wallclock = false;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 79, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 80, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 90, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 99, 0), 0.05);
  p.warmdown_iters = 0;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 99, 0), 1.0);
}

TEST(TrainSchedule, WarmdownFracWithMinLr) {
  ScheduleParams p;
  p.warmdown_frac = 0.5;
  p.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 10, 200000), 1.0);            // f = 1/3
  EXPECT_NEAR(lr_multiplier(p, 10, 450000), 0.5, 1e-12);          // f = 0.75 -> 0.25 / 0.5
  EXPECT_NEAR(lr_multiplier(p, 10, 590000), 0.1, 1e-12);          // floor
  p.by_wallclock = false;
  p.iterations = 1000;
  EXPECT_NEAR(lr_multiplier(p, 800, 0), 0.4, 1e-12);              // step-based fraction
}

TEST(TrainSchedule, MuonMomentumWarmup) {
  OptimSection o;
  EXPECT_DOUBLE_EQ(muon_momentum_at(o, 0), 0.85);
  EXPECT_NEAR(muon_momentum_at(o, 250), 0.90, 1e-12);
  EXPECT_DOUBLE_EQ(muon_momentum_at(o, 500), 0.95);
  EXPECT_DOUBLE_EQ(muon_momentum_at(o, 5000), 0.95);
}
