#include "core/error.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data_test_util.h"

using namespace pgolf;
using namespace pgolf::data;
using pgolf::data::test::ScratchDir;

namespace {

// Shards holding 0..9 and 10..16 (17 tokens in all), so every token is its own position.
void make_shards(const ScratchDir& dir) {
  std::vector<uint16_t> a(10), b(7);
  for (int i = 0; i < 10; ++i) a[i] = static_cast<uint16_t>(i);
  for (int i = 0; i < 7; ++i) b[i] = static_cast<uint16_t>(10 + i);
  write_shard(dir / "d_train_000001.bin", b.data(), 7);  // written out of order: the loader sorts names
  write_shard(dir / "d_train_000000.bin", a.data(), 10);
}

std::vector<uint16_t> expected_span(int64_t start, int64_t n) {
  std::vector<uint16_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<uint16_t>((start + i) % 17));
  return v;
}

}  // namespace

TEST(TokenStream, SequentialCrossesShardsAndWraps) {
  ScratchDir dir;
  make_shards(dir);
  TokenStream s(dir / "d_train_*.bin");
  EXPECT_EQ(s.total_tokens(), 17);
  EXPECT_EQ(s.next_span(8), expected_span(0, 8));
  EXPECT_EQ(s.next_span(5), expected_span(8, 5));   // crosses into shard 1
  EXPECT_EQ(s.next_span(30), expected_span(13, 30));  // wraps around twice
  EXPECT_TRUE(s.next_span(0).empty());
}

TEST(TokenStream, StateRestoresThePosition) {
  ScratchDir dir;
  make_shards(dir);
  TokenStream s(dir.str());
  s.next_span(12);
  const TokenStream::State st = s.state();
  EXPECT_EQ(st.shard, 1);
  EXPECT_EQ(st.pos, 2);
  auto after = s.next_span(9);
  TokenStream fresh(dir.str());
  fresh.restore(st);
  EXPECT_EQ(fresh.next_span(9), after);
  EXPECT_THROW(fresh.restore({2, 0}), Error);
  EXPECT_THROW(fresh.restore({0, 11}), Error);
}

TEST(DistributedTokenLoader, MatchesTheReferenceSplit) {
  ScratchDir dir;
  make_shards(dir);
  // world 2, grad_accum 1, global 8 tokens, seq 2: local_tokens 4, each rank takes a span of 5 from a chunk of 10.
  DistributedTokenLoader r0(dir.str()), r1(dir.str());
  for (int step = 0; step < 3; ++step) {
    Batch b0 = r0.next_batch(8, 2, 0, 2, 1);
    Batch b1 = r1.next_batch(8, 2, 1, 2, 1);
    const int64_t chunk = step * 10;
    for (int rank = 0; rank < 2; ++rank) {
      const Batch& b = rank == 0 ? b0 : b1;
      EXPECT_EQ(b.rows, 2);
      EXPECT_EQ(b.seq_len, 2);
      auto span = expected_span(chunk + rank * 5, 5);
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(b.x[i], span[i]) << "step " << step << " rank " << rank;
        EXPECT_EQ(b.y[i], span[i + 1]);
      }
    }
  }
  EXPECT_EQ(r0.state().shard, r1.state().shard);
  EXPECT_EQ(r0.state().pos, r1.state().pos);
  // The all-ranks variant cuts the same chunk.
  DistributedTokenLoader all(dir.str());
  auto batches = all.next_batch_all_ranks(8, 2, 2, 1);
  DistributedTokenLoader single(dir.str());
  EXPECT_EQ(batches[1].x, single.next_batch(8, 2, 1, 2, 1).x);
  // Grad accumulation divides the per-rank span further.
  DistributedTokenLoader acc(dir.str());
  Batch b = acc.next_batch(8, 2, 0, 1, 2);
  EXPECT_EQ(b.x, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_THROW(acc.next_batch(9, 2, 0, 2, 1), Error);   // not divisible by world
  EXPECT_THROW(acc.next_batch(12, 4, 0, 2, 1), Error);  // 6 per rank is not a multiple of 4
  EXPECT_THROW(acc.next_batch(8, 2, 2, 2, 1), Error);   // rank outside world
}

TEST(LoadValTokens, ConcatenatesAndTrims) {
  ScratchDir dir;
  make_shards(dir);
  auto v = load_val_tokens(dir.str(), 5);
  EXPECT_EQ(v, expected_span(0, 16));  // ((17 - 1) / 5) * 5 + 1 = 16
  EXPECT_EQ(load_val_tokens(dir.str(), 4).size(), 17u);
  EXPECT_THROW(load_val_tokens(dir.str(), 17), Error);
}
