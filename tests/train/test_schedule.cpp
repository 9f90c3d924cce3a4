#include <gtest/gtest.h>

#include <cmath>

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

TEST(TrainSchedule, CosineWarmdownShape) {
  ScheduleParams p;
  p.iterations = 100;
  p.warmdown_iters = 20;
  p.by_wallclock = false;
  p.cosine = true;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 50, 0), 1.0);
  EXPECT_NEAR(lr_multiplier(p, 85, 0), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);  // q = 0.25
  EXPECT_NEAR(lr_multiplier(p, 90, 0), 0.5, 1e-12);                                // q = 0.5
  EXPECT_NEAR(lr_multiplier(p, 95, 0), 0.5 * (1 + std::cos(M_PI * 0.75)), 1e-12);  // 0.146, linear would be 0.25
  EXPECT_NEAR(lr_multiplier(p, 100, 0), 0.0, 1e-12);
  // The same shape on WARMDOWN_FRAC, with the MIN_LR floor.
  ScheduleParams f;
  f.warmdown_frac = 0.5;
  f.cosine = true;
  f.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(lr_multiplier(f, 10, 240000), 1.0);                                 // progress 0.4
  EXPECT_NEAR(lr_multiplier(f, 10, 450000), 0.5, 1e-12);                               // q = 0.5
  EXPECT_NEAR(lr_multiplier(f, 10, 360000), 0.5 * (1 + std::cos(M_PI * 0.2)), 1e-12);  // q = 0.2
  EXPECT_NEAR(lr_multiplier(f, 10, 580000), 0.1, 1e-12);                               // floor
}

TEST(TrainSchedule, MinLrFloorsEveryWarmdownButNotTheFlatPart) {
  ScheduleParams p;
  p.iterations = 100;
  p.warmdown_iters = 20;
  p.by_wallclock = false;
  p.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 10, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 90, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 99, 0), 0.1);  // 0.05 without the floor
  ScheduleParams w;                                // baseline wallclock form: 60 s left of W = 120 s
  w.min_lr = 0.6;
  EXPECT_NEAR(lr_multiplier(w, 5400, 540000), 0.6, 1e-12);
  EXPECT_DOUBLE_EQ(lr_multiplier(w, 4000, 400000), 1.0);
}

TEST(TrainSchedule, LinearLrWarmup) {
  ScheduleParams p;
  p.iterations = 100;
  p.warmdown_iters = 20;
  p.by_wallclock = false;
  p.lr_warmup_steps = 4;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 0, 0), 0.25);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 1, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 3, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 4, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 90, 0), 0.5);
}

TEST(TrainSchedule, ProgressByWallclockOrByStep) {
  ScheduleParams p;  // 600 s cap, wallclock
  EXPECT_DOUBLE_EQ(training_progress(p, 10, 150000), 0.25);
  EXPECT_DOUBLE_EQ(training_progress(p, 10, 900000), 1.0);  // clamped
  p.by_wallclock = false;
  p.iterations = 40;
  EXPECT_DOUBLE_EQ(training_progress(p, 10, 150000), 0.25);
  p.by_wallclock = true;
  p.max_wallclock_ms = 0;  // no cap: steps
  EXPECT_DOUBLE_EQ(training_progress(p, 30, 150000), 0.75);
  // The schedule follows the same progress: WARMDOWN_FRAC 0.5 by step.
  p.warmdown_frac = 0.5;
  EXPECT_DOUBLE_EQ(lr_multiplier(p, 30, 1e9), 0.5);
}

TEST(TrainSchedule, MuonWeightDecayTaper) {
  OptimSection o;  // final 1.0: no taper
  EXPECT_DOUBLE_EQ(muon_wd_multiplier(o, 0.9), 1.0);
  o.muon_wd_taper_start = 0.7;
  o.muon_wd_taper_final = 0.5;  // R:2026-04-18: full until 0.70, then linear to 0.5x
  EXPECT_DOUBLE_EQ(muon_wd_multiplier(o, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(muon_wd_multiplier(o, 0.69), 1.0);
  EXPECT_NEAR(muon_wd_multiplier(o, 0.85), 0.75, 1e-12);
  EXPECT_NEAR(muon_wd_multiplier(o, 1.0), 0.5, 1e-12);
}
