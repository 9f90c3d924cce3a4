// Data-parallel training over the loopback communicator against one rank with gradient accumulation.
#include <gtest/gtest.h>

#include <filesystem>

#include "tiny_run.h"

using namespace pgolf;
namespace fs = std::filesystem;

using test::TinyData;

// Exact accumulation: every micro-step's fresh gradient is added into one accumulator in global micro-step order,
// which the loopback reproduces across ranks, so world W x (12 / W) micro-steps equals world 1 x 12 bit for bit.
TEST(DistDataParallel, LoopbackWorldsAreBitIdenticalWithExactAccumulation) {
  TinyData d;
  const test::TinyRun ref = d.run(1, /*exact=*/true, "w1");
  ASSERT_EQ(ref.losses.size(), 4u);
  EXPECT_LT(ref.losses.back(), ref.losses.front());
  for (int world : {2, 3, 4}) {
    const test::TinyRun got = d.run(world, true, fmt::format("w{}", world));
    EXPECT_EQ(got.losses, ref.losses) << "world " << world;
    // Validation is split over the ranks (train/evaluate.h) and still gives the one-rank numbers exactly.
    EXPECT_EQ(got.result.val_loss, ref.result.val_loss) << "world " << world;
  }
}

// Default (fused) accumulation, the path NCCL runs use: the sum order differs, losses agree to rounding.
TEST(DistDataParallel, LoopbackWorldsMatchGradAccumulationWithinRounding) {
  TinyData d;
  const std::vector<double> ref = d.run(1, /*exact=*/false, "plain1").losses;
  for (int world : {2, 4}) {
    const std::vector<double> got = d.run(world, false, fmt::format("plain{}", world)).losses;
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_NEAR(got[i], ref[i], 1e-5 * std::abs(ref[i])) << "world " << world << " step " << i + 1;
  }
  // Only rank 0 writes the run folder's files.
  EXPECT_TRUE(fs::exists(d.dir + "/plain2/train.log"));
  EXPECT_TRUE(fs::exists(d.dir + "/plain2/checkpoint.bin"));
}

// train.overlap_grad_reduce (the default) reduces each block's gradients during the last micro-step's backward;
// the sums are the same as one reduction after it, so on the loopback the runs agree bit for bit.
TEST(DistDataParallel, OverlappedReductionEqualsOneReductionAfterTheBackward) {
  TinyData d("overlap");
  for (int world : {2, 3}) {
    train::Config on = d.cfg, off = d.cfg;
    on.train.overlap_grad_reduce = true;
    off.train.overlap_grad_reduce = false;
    const test::TinyRun a = d.run(world, false, fmt::format("on{}", world), on);
    const test::TinyRun b = d.run(world, false, fmt::format("off{}", world), off);
    ASSERT_EQ(a.losses.size(), 4u);
    EXPECT_EQ(a.losses, b.losses) << "world " << world;
    EXPECT_EQ(a.result.val_loss, b.result.val_loss) << "world " << world;
  }
}
