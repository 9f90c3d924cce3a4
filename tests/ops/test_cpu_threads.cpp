#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "ops/cpu_threads.h"

using pgolf::ops::cpu::num_threads;
using pgolf::ops::cpu::parallel_for;

TEST(CpuThreads, EveryItemRunsExactlyOnce) {
  EXPECT_GE(num_threads(), 1);
  for (int64_t n : {0, 1, 2, 7, 64, 1000}) {
    for (int64_t grain : {1, 3, 100}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(n, grain, [&](int64_t b, int64_t e) {
        EXPECT_LE(0, b);
        EXPECT_LT(b, e);
        EXPECT_LE(e, n);
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n << " item " << i;
    }
  }
}

TEST(CpuThreads, NestedCallsRunInline) {
  std::atomic<int64_t> total{0};
  parallel_for(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      parallel_for(10, 1, [&](int64_t ib, int64_t ie) { total.fetch_add(ie - ib); });
  });
  EXPECT_EQ(total.load(), 80);
}

TEST(CpuThreads, ExceptionsReachTheCallerAndThePoolStaysUsable) {
  EXPECT_THROW(parallel_for(100, 1,
                            [&](int64_t b, int64_t e) {
                              if (b <= 50 && 50 < e) throw std::runtime_error("piece with item 50 failed");
                            }),
               std::runtime_error);
  std::atomic<int64_t> total{0};
  parallel_for(100, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  EXPECT_EQ(total.load(), 100);
}
