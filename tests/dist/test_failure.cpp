// A rank that dies or stops calling collectives: the others must fail with an error naming the operation within
// the communicator's timeout (never hang), on the bare loopback comms and inside training.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "dist/loopback_comm.h"
#include "tiny_run.h"

using namespace pgolf;

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

// Bare comms, no run_loopback: nothing tells the survivors that rank 1 is gone (as when a process dies), so only
// the timeout saves them.
TEST(DistFailure, RankThatStopsMakesTheOthersFailNamingTheOp) {
  constexpr double kTimeout = 0.5;
  auto comms = dist::make_loopback_comms(3, kTimeout);
  std::vector<std::string> errors(3);
  std::vector<double> seconds(3, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      dist::Communicator& c = *comms[static_cast<size_t>(r)];
      Tensor buf = Tensor::zeros(Shape{8}, DType::F32);
      c.all_reduce_sum(buf);
      if (r == 1) return;  // rank 1 "dies" after its first collective
      const auto t = Clock::now();
      try {
        c.reduce_scatter_sum(Tensor::zeros(Shape{6}, DType::F32), Tensor::zeros(Shape{2}, DType::F32));
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
      seconds[static_cast<size_t>(r)] = since(t);
    });
  }
  for (auto& t : threads) t.join();
  for (int r : {0, 2}) {
    const std::string& e = errors[static_cast<size_t>(r)];
    EXPECT_NE(e.find("reduce_scatter_sum"), std::string::npos) << "rank " << r << ": " << e;
    EXPECT_NE(e.find("rank(s) 1 that never arrived"), std::string::npos) << "rank " << r << ": " << e;
    EXPECT_LT(seconds[static_cast<size_t>(r)], kTimeout + 2.0) << "rank " << r;
  }
}

// Training: rank 1 throws after its second step. With run_loopback the survivors are woken at once and the error
// names the failing rank and its reason.
TEST(DistFailure, RankDyingInTrainingStopsTheOthersQuickly) {
  test::TinyData d("fail");
  train::Config c = d.cfg;
  c.train.grad_accum = test::kMicroSteps / 2;
  const auto t = Clock::now();
  std::string err;
  try {
    dist::run_loopback(2, [&](dist::Communicator& comm) {
      train::RunOptions o;
      o.run_dir = d.dir + "/run";
      o.quiet = true;
      o.comm = &comm;
      o.on_step = [&comm](int64_t step, double) {
        if (comm.rank() == 1 && step == 2) PG_FAIL("rank 1 lost its GPU");
      };
      train::run_training(c, o);
    }, /*timeout_s=*/20);
  } catch (const std::exception& e) {
    err = e.what();
  }
  EXPECT_NE(err.find("loopback rank 1 failed"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 lost its GPU"), std::string::npos) << err;
  EXPECT_LT(since(t), 15.0);
}

// Training on bare comms: rank 1 simply stops (returns) after step 2; rank 0 must fail on the timeout with an
// error naming the collective it was waiting in, instead of hanging.
TEST(DistFailure, SilentRankInTrainingTimesOutTheOthers) {
  test::TinyData d("silent");
  train::Config c = d.cfg;
  c.train.grad_accum = test::kMicroSteps / 2;
  c.train.iterations = 6;
  constexpr double kTimeout = 1.0;
  auto comms = dist::make_loopback_comms(2, kTimeout);
  std::string err0;
  double stuck_s = 0;
  std::thread r1([&] {
    train::RunOptions o;
    o.run_dir = d.dir + "/run";
    o.quiet = true;
    o.comm = comms[1].get();
    // Leaves its training loop after step 2 without telling anyone (as a killed process would).
    o.on_step = [](int64_t step, double) {
      if (step == 2) throw std::runtime_error("silently gone");
    };
    try {
      train::run_training(c, o);
    } catch (...) {
    }
  });
  Clock::time_point last_step = Clock::now();
  try {
    train::RunOptions o;
    o.run_dir = d.dir + "/run";
    o.quiet = true;
    o.comm = comms[0].get();
    o.on_step = [&](int64_t, double) { last_step = Clock::now(); };
    train::run_training(c, o);
  } catch (const std::exception& e) {
    err0 = e.what();
    stuck_s = since(last_step);
  }
  r1.join();
  EXPECT_NE(err0.find("never arrived"), std::string::npos) << err0;
  EXPECT_NE(err0.find("rank(s) 1"), std::string::npos) << err0;
  // The op is named: the first collective after a step is the broadcast of rank 0's clock or the gradient sum.
  EXPECT_TRUE(err0.find("broadcast") != std::string::npos || err0.find("all_reduce_sum") != std::string::npos) << err0;
  EXPECT_LT(stuck_s, kTimeout + 5.0);
}
