// ShuffledSequenceLoader (data/shuffled_loader.h) and the trainer's TrainLoader switch (data/train_loader.h).
// Token i of every test shard holds the value (shard * 10000 + i), so a row names its shard and window.
#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "data/shard.h"
#include "data/shuffled_loader.h"
#include "data/train_loader.h"
#include "data_test_util.h"

using namespace pgolf;
using namespace pgolf::data;
using pgolf::data::test::ScratchDir;

namespace {

void make_shard(const ScratchDir& dir, int index, int n) {
  std::vector<uint16_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = static_cast<uint16_t>(index * 10000 + i);
  write_shard(dir / ("s_train_00000" + std::to_string(index) + ".bin"), t.data(), n);
}

struct Window {
  int shard;
  int start;
  bool operator<(const Window& o) const { return shard != o.shard ? shard < o.shard : start < o.start; }
};

// The windows of a batch, after checking each row is a contiguous window with y = x shifted by one.
std::vector<Window> windows_of(const Batch& b) {
  std::vector<Window> out;
  for (int64_t r = 0; r < b.rows; ++r) {
    const int32_t* x = b.x.data() + r * b.seq_len;
    const int32_t* y = b.y.data() + r * b.seq_len;
    for (int64_t t = 0; t < b.seq_len; ++t) {
      EXPECT_EQ(x[t], x[0] + t) << "row " << r << " is not contiguous";
      EXPECT_EQ(y[t], x[t] + 1) << "row " << r << ": y is not x shifted by one";
    }
    out.push_back({x[0] / 10000, x[0] % 10000});
  }
  return out;
}

}  // namespace

TEST(ShuffledSequenceLoader, ServesEveryWindowOncePerEpochInRandomOrder) {
  ScratchDir dir;
  make_shard(dir, 0, 1000);  // T = 8: 123 or 124 windows depending on the phase
  ShuffledSequenceLoader l(dir.str(), 8, 0, 1, 7);
  std::vector<Window> seen;
  while (l.epoch() == 0) {
    for (const Window& w : windows_of(l.next_batch(8, 8, 0, 1, 1))) seen.push_back(w);
  }
  seen.pop_back();  // the draw that started epoch 1
  const int phase = seen.front().start % 8;
  EXPECT_EQ(static_cast<int>(seen.size()), (1000 - phase - 1) / 8);
  std::set<Window> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "a window repeated within an epoch";
  for (const Window& w : seen) {
    EXPECT_EQ(w.start % 8, phase);
    EXPECT_LE(w.start + 8 + 1, 1000);
  }
  EXPECT_FALSE(std::is_sorted(seen.begin(), seen.end(), [](auto a, auto b) { return a < b; })) << "not shuffled";
}

TEST(ShuffledSequenceLoader, DrawsFromShardsInProportionAndSplitsThemOverRanks) {
  ScratchDir dir;
  make_shard(dir, 0, 4001);  // 4000 / 8 = 500 windows (phase 0) …
  make_shard(dir, 1, 1001);  // … and 125: shard 0 should serve about 80 % of the first 200 rows
  make_shard(dir, 2, 2001);
  make_shard(dir, 3, 3001);
  ShuffledSequenceLoader alone(dir / "s_train_00000[01].bin", 8, 0, 1, 3);
  std::map<int, int> counts;
  for (int i = 0; i < 25; ++i)
    for (const Window& w : windows_of(alone.next_batch(64, 8, 0, 1, 1))) ++counts[w.shard];
  EXPECT_NEAR(counts[0] / 200.0, 0.8, 0.1);
  // Four shards, two ranks: rank r reads shards r and r + 2 only.
  for (int rank = 0; rank < 2; ++rank) {
    ShuffledSequenceLoader l(dir.str(), 8, rank, 2, 3);
    std::set<int> shards;
    for (int i = 0; i < 40; ++i)
      for (const Window& w : windows_of(l.next_batch(128, 8, rank, 2, 1))) shards.insert(w.shard);
    EXPECT_EQ(shards, (std::set<int>{rank, rank + 2}));
  }
}

TEST(ShuffledSequenceLoader, RanksSharingOneShardTakeDisjointWindows) {
  ScratchDir dir;
  make_shard(dir, 0, 2000);
  std::vector<Window> all;
  int64_t per_rank = 0;
  for (int rank = 0; rank < 3; ++rank) {
    ShuffledSequenceLoader l(dir.str(), 16, rank, 3, 11);
    std::vector<Window> mine;
    while (l.epoch() == 0)
      for (const Window& w : windows_of(l.next_batch(48, 16, rank, 3, 1))) mine.push_back(w);
    mine.pop_back();
    per_rank = std::max<int64_t>(per_rank, static_cast<int64_t>(mine.size()));
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::set<Window> unique(all.begin(), all.end());
  EXPECT_EQ(unique.size(), all.size()) << "two ranks served the same window";
  const int phase = all.front().start % 16;
  EXPECT_EQ(static_cast<int>(all.size()), (2000 - phase - 1) / 16) << "the ranks together cover every window";
}

TEST(ShuffledSequenceLoader, IsDeterministicAndRestoresByReplay) {
  ScratchDir dir;
  make_shard(dir, 0, 700);
  make_shard(dir, 1, 500);
  ShuffledSequenceLoader a(dir.str(), 8, 0, 1, 5), b(dir.str(), 8, 0, 1, 5), other(dir.str(), 8, 0, 1, 6);
  for (int i = 0; i < 100; ++i) {  // 400 windows: crosses two epochs of 149
    const Batch x = a.next_batch(32, 8, 0, 1, 1);
    EXPECT_EQ(x.x, b.next_batch(32, 8, 0, 1, 1).x);
  }
  EXPECT_GT(a.epoch(), 1);
  EXPECT_NE(a.next_batch(32, 8, 0, 1, 1).x, other.next_batch(32, 8, 0, 1, 1).x) << "the seed changes the order";
  const int64_t drawn = a.sequences_drawn();
  const Batch next = a.next_batch(32, 8, 0, 1, 1);
  ShuffledSequenceLoader fresh(dir.str(), 8, 0, 1, 5);
  fresh.restore(drawn);
  EXPECT_EQ(fresh.epoch(), a.epoch());
  EXPECT_EQ(fresh.next_batch(32, 8, 0, 1, 1).x, next.x);
}

TEST(ShuffledSequenceLoader, RejectsBadInput) {
  ScratchDir dir;
  make_shard(dir, 0, 8);
  EXPECT_THROW(ShuffledSequenceLoader(dir.str(), 8, 0, 1, 1), Error);  // 8 tokens hold no 9-token window
  make_shard(dir, 1, 100);
  ShuffledSequenceLoader l(dir.str(), 8, 0, 1, 1);
  EXPECT_THROW(l.next_batch(32, 16, 0, 1, 1), Error);  // not the seq_len it was built for
  EXPECT_THROW(l.next_batch(30, 8, 0, 1, 1), Error);   // 30 tokens is not whole rows
  EXPECT_THROW(l.restore(-1), Error);
  EXPECT_THROW(ShuffledSequenceLoader(dir.str(), 8, 2, 2, 1), Error);
}

TEST(TrainLoader, SwitchesKindsAndRefusesAForeignState) {
  ScratchDir dir;
  make_shard(dir, 0, 500);
  TrainLoader seq("sequential", dir.str(), 8, 0, 1, 1), shuf("shuffled", dir.str(), 8, 0, 1, 1);
  EXPECT_EQ(seq.next_batch(16, 8, 0, 1, 1).x[0], 0);  // the stream starts at the first token
  shuf.next_batch(16, 8, 0, 1, 1);
  EXPECT_EQ(shuf.state().shard, TrainLoader::kShuffled);
  EXPECT_EQ(shuf.state().pos, 2);
  EXPECT_THROW(seq.restore(shuf.state()), Error);
  EXPECT_THROW(shuf.restore(seq.state()), Error);
  EXPECT_THROW(TrainLoader("random", dir.str(), 8, 0, 1, 1), Error);
}
