// Window schedules (TECHNIQUES.md §3.3): every target scored exactly once, the sliding context
// guarantee, and document windows that never reach across a BOS.
#include <gtest/gtest.h>

#include <vector>

#include "eval/windows.h"
#include "eval_test_util.h"

namespace pgolf::eval {
namespace {

std::vector<int> coverage(const std::vector<Window>& ws, int64_t n) {
  std::vector<int> c(static_cast<size_t>(n), 0);
  for (const auto& w : ws)
    for (int64_t t = w.first_target(); t < w.end_target(); ++t) ++c[static_cast<size_t>(t)];
  return c;
}

TEST(EvalWindows, SlidingScoresEveryTargetOnceWithFullContext) {
  for (int64_t n : {2, 3, 17, 64, 65, 100, 257}) {
    for (auto [T, s] : {std::pair<int64_t, int64_t>{16, 4}, {16, 16}, {16, 1}, {8, 3}, {32, 7}}) {
      std::vector<Window> ws;
      append_sliding_windows(0, n - 1, T, s, ws);
      const auto c = coverage(ws, n);
      EXPECT_EQ(c[0], 0);
      for (int64_t t = 1; t < n; ++t) ASSERT_EQ(c[static_cast<size_t>(t)], 1) << "n " << n << " T " << T << " s " << s;
      for (size_t i = 0; i < ws.size(); ++i) {
        EXPECT_LE(ws[i].len, T);
        EXPECT_GT(ws[i].scored(), 0);
        EXPECT_LE(ws[i].end_target(), n);
        if (i > 0) {
          EXPECT_EQ(ws[i].start, static_cast<int64_t>(i) * s);
          EXPECT_GE(ws[i].score_from, T - s);  // every later-window target sees >= T - s tokens of context
        }
      }
    }
  }
}

TEST(EvalWindows, PlainIsNonOverlappingRows) {
  const auto toks = testing::doc_stream(70, 32, 3);
  const auto ws = build_windows(Mode::Plain, toks.data(), 70, 16, 4, testing::kBos);
  ASSERT_EQ(ws.size(), 5u);  // 69 targets = 4 full rows + 5
  for (size_t i = 0; i < ws.size(); ++i) {
    EXPECT_EQ(ws[i].start, static_cast<int64_t>(i) * 16);
    EXPECT_EQ(ws[i].score_from, 0);
  }
  EXPECT_EQ(ws.back().len, 5);
}

TEST(EvalWindows, DocWindowsStayInsideTheirDocument) {
  const int64_t n = 400;
  const auto toks = testing::doc_stream(n, 32, 5);
  for (int64_t s : {4, 16}) {
    const auto ws = build_windows(Mode::Doc, toks.data(), n, 16, s, testing::kBos);
    const auto c = coverage(ws, n);
    for (int64_t t = 1; t < n; ++t) ASSERT_EQ(c[static_cast<size_t>(t)], 1) << t;
    for (const auto& w : ws) {
      // Only the window's first input may be a BOS: the model never reads across a document start.
      for (int64_t p = w.start + 1; p < w.start + w.len; ++p) ASSERT_NE(toks[static_cast<size_t>(p)], testing::kBos);
      // A document's targets run to and include the next BOS.
      for (int64_t t = w.first_target(); t + 1 < w.end_target(); ++t)
        ASSERT_NE(toks[static_cast<size_t>(t)], testing::kBos);
    }
  }
}

TEST(EvalWindows, RejectsBadArguments) {
  std::vector<Window> ws;
  EXPECT_THROW(append_sliding_windows(0, 10, 8, 9, ws), Error);
  EXPECT_THROW(append_sliding_windows(0, 10, 8, 0, ws), Error);
  EXPECT_THROW(parse_mode("windowed"), Error);
  EXPECT_EQ(parse_mode("doc"), Mode::Doc);
}

}  // namespace
}  // namespace pgolf::eval
