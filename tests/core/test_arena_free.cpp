// Arena::free: best-fit reuse with coalescing, the top coming down, misuse detected, and the same
// alloc/free sequence giving the same offsets and peak in measuring and real mode.
#include <gtest/gtest.h>

#include "core/arena.h"

namespace pgolf {
namespace {

constexpr size_t A = Arena::kAlign;

Arena::Block f32(Arena& a, int64_t n) { return a.alloc_block(Shape{n}, DType::F32); }

TEST(ArenaFree, BumpModeIsUnchanged) {
  Arena a(Device::CPU, "bump");
  a.reserve(16 * A);
  Arena::Block x = f32(a, 10), y = f32(a, 100), z = f32(a, 1);
  EXPECT_EQ(x.offset, 0u);
  EXPECT_EQ(y.offset, A);
  EXPECT_EQ(z.offset, 3 * A);  // 400 bytes round up to two alignment units
  EXPECT_EQ(a.used(), 3 * A + 4);
  EXPECT_EQ(a.peak(), 3 * A + 4);
  EXPECT_EQ(static_cast<char*>(y.t.data()) - static_cast<char*>(x.t.data()), static_cast<std::ptrdiff_t>(A));
  EXPECT_EQ(a.holes(), 0u);
}

TEST(ArenaFree, TopComesDownAndHolesCoalesce) {
  Arena a(Device::CPU, "free");
  a.reserve(64 * A);
  Arena::Block b0 = f32(a, 64), b1 = f32(a, 64), b2 = f32(a, 64), b3 = f32(a, 64);  // one unit each
  a.free(b1);
  EXPECT_EQ(a.holes(), 1u);
  EXPECT_EQ(a.hole_bytes(), A);
  a.free(b0);  // merges with b1's hole
  EXPECT_EQ(a.holes(), 1u);
  EXPECT_EQ(a.hole_bytes(), 2 * A);
  a.free(b3);  // the top block: the top comes down to b2's end
  EXPECT_EQ(a.used(), 3 * A);
  a.free(b2);  // now the top reaches the hole, which is absorbed
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.holes(), 0u);
  EXPECT_EQ(a.peak(), 4 * A);
}

TEST(ArenaFree, BestFitPicksTheSmallestHoleThatFits) {
  Arena a(Device::CPU, "fit");
  a.reserve(64 * A);
  Arena::Block big = f32(a, 3 * 64);  // 3 units
  Arena::Block sep1 = f32(a, 1);
  Arena::Block small = f32(a, 64);    // 1 unit
  Arena::Block sep2 = f32(a, 1);
  Arena::Block mid = f32(a, 2 * 64);  // 2 units
  Arena::Block keep = f32(a, 1);
  a.free(big);
  a.free(small);
  a.free(mid);
  EXPECT_EQ(a.holes(), 3u);
  EXPECT_EQ(f32(a, 64).offset, small.offset);   // exact fit
  EXPECT_EQ(f32(a, 100).offset, mid.offset);    // 2 units: mid beats big
  Arena::Block part = f32(a, 64);               // only big is left: carved from its start
  EXPECT_EQ(part.offset, big.offset);
  EXPECT_EQ(a.hole_bytes(), 2 * A);
  const size_t top = a.used();
  EXPECT_EQ(f32(a, 4 * 64).offset, (keep.offset + A)) << "nothing fits: bump";
  EXPECT_GT(a.used(), top);
  (void)sep1;
  (void)sep2;
}

TEST(ArenaFree, MisuseIsDetected) {
  Arena a(Device::CPU, "misuse");
  a.reserve(16 * A);
  Arena::Block x = f32(a, 8), y = f32(a, 8);
  a.free(x);
  EXPECT_THROW(a.free(x), Error) << "double free of a hole";
  a.free(y);
  EXPECT_THROW(a.free(y), Error) << "double free above the top";
  EXPECT_THROW(a.alloc(Shape{17 * static_cast<int64_t>(A)}, DType::U8, "too big"), Error);
}

TEST(ArenaFree, ResetDropsHolesAboveTheMark) {
  Arena a(Device::CPU, "reset");
  a.reserve(64 * A);
  f32(a, 64);
  const size_t mark = a.mark();
  Arena::Block b1 = f32(a, 64);
  f32(a, 64);
  a.free(b1);
  EXPECT_EQ(a.holes(), 1u);
  a.reset(mark);
  EXPECT_EQ(a.used(), mark);
  EXPECT_EQ(a.holes(), 0u);
  EXPECT_EQ(f32(a, 64).offset, A);
  // A hole straddling the mark is cut at the mark and, now at the top, absorbed.
  Arena c(Device::CPU, "straddle");
  c.reserve(64 * A);
  Arena::Block h = f32(c, 4 * 64);
  f32(c, 1);
  c.free(h);
  c.reset(2 * A);
  EXPECT_EQ(c.used(), 0u);
  EXPECT_EQ(c.holes(), 0u);
  a.reset();
  EXPECT_EQ(a.used(), 0u);
}

// A fixed pseudo-random program of allocs and frees, run in measuring and in real mode.
std::vector<Arena::Event> program(Arena& a) {
  std::vector<Arena::Event> ev;
  a.trace(&ev);
  std::vector<Arena::Block> live;
  uint32_t s = 12345;
  for (int i = 0; i < 300; ++i) {
    s = s * 1664525u + 1013904223u;
    if (!live.empty() && (s >> 28) < 6) {
      const size_t k = (s >> 8) % live.size();
      a.free(live[k]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    } else {
      live.push_back(a.alloc_block(Shape{static_cast<int64_t>((s >> 12) % 3000)}, DType::BF16));
    }
  }
  for (size_t i = live.size(); i-- > 0;) a.free(live[i]);
  a.trace(nullptr);
  return ev;
}

TEST(ArenaFree, MeasuringAndRealRunsGiveTheSameOffsetsAndPeak) {
  Arena a(Device::CPU, "plan");
  a.begin_measure();
  const std::vector<Arena::Event> planned = program(a);
  const size_t peak = a.end_measure();
  a.reserve(peak);
  const std::vector<Arena::Event> real = program(a);
  EXPECT_EQ(planned, real);
  EXPECT_EQ(a.peak(), peak);
  EXPECT_EQ(a.used(), 0u) << "everything freed in reverse brings the top back to 0";
  EXPECT_EQ(program(a), real) << "a second run repeats the offsets";
  size_t sum = 0;
  for (const Arena::Event& e : real) sum += e.alloc ? e.bytes : 0;
  EXPECT_LT(peak, sum / 2) << "reuse must keep the peak well under the total allocated";
}

}  // namespace
}  // namespace pgolf
