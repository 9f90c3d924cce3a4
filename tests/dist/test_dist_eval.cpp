// Validation split over loopback ranks (train/evaluate.h): the batches are dealt round-robin, the per-batch loss
// sums are all-gathered and added in batch order, so every world size gives the one-rank result exactly.
#include <gtest/gtest.h>

#include <mutex>

#include "../eval/eval_test_util.h"
#include "dist/loopback_comm.h"
#include "train/evaluate.h"

using namespace pgolf;

TEST(DistEval, SplitValidationEqualsOneRankExactly) {
  const auto luts = eval::testing::synthetic_luts(32);
  // 10 rows of 16 in batches of 3: 4 batches, the last one short; world 5 leaves a rank without a batch.
  const auto toks = eval::testing::doc_stream(16 * 10 + 1, 32, 5);
  auto score = [&](dist::Communicator* comm, int64_t* batches) {
    model::GPT m = eval::testing::tiny_model();
    train::Validator val(toks, luts, 16, 3, Device::CPU);
    Arena arena(Device::CPU);
    arena.reserve(m.plan_bytes(3, 16, false));
    const data::BpbAccumulator acc = val.run(m, arena, comm);
    if (batches) *batches = val.batches_scored();
    return acc;
  };
  const data::BpbAccumulator ref = score(nullptr, nullptr);
  ASSERT_EQ(ref.tokens, 160);
  ASSERT_GT(ref.nll_nats, 0);
  for (int world : {2, 3, 5}) {
    std::mutex m;
    int64_t total_batches = 0;
    dist::run_loopback(world, [&](dist::Communicator& c) {
      int64_t mine = 0;
      const data::BpbAccumulator got = score(&c, &mine);
      std::lock_guard<std::mutex> lk(m);
      total_batches += mine;
      EXPECT_EQ(got.nll_nats, ref.nll_nats) << "world " << world << " rank " << c.rank();  // bit for bit
      EXPECT_EQ(got.tokens, ref.tokens) << "world " << world;
      EXPECT_EQ(got.bytes, ref.bytes) << "world " << world;
      EXPECT_EQ(got.loss(), ref.loss());
      EXPECT_EQ(got.bpb(), ref.bpb());
    }, 20);
    EXPECT_EQ(total_batches, 4) << "world " << world << ": each batch must be scored by exactly one rank";
  }
}
