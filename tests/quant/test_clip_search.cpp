// Clip search (quant/clip_search.h): never worse than no search, deterministic, rate-bounded, and
// row splicing equals GPTQ run with the spliced scales.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "quant/clip_search.h"
#include "quant/gptq.h"

using namespace pgolf;
using namespace pgolf::quant;

namespace {

// Gaussian rows with per-row scale spread and a few large outliers (what trained matrices look like).
std::vector<float> outlier_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float sd = 0.01f * (0.5f + 2.f * u(g));
    for (int64_t c = 0; c < cols; ++c) {
      float v = sd * d(g);
      if (u(g) < 0.004f) v *= 12.f;  // outlier
      w[static_cast<size_t>(r * cols + c)] = v;
    }
  }
  return w;
}

std::vector<double> random_hessian(int64_t cols, int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  HessianAccumulator acc(cols);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    const float common = d(g);
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(t * cols + c)] = (d(g) + 0.5f * common) * (1.f + static_cast<float>(c % 5));
  }
  acc.add(x, n);
  return acc.hessian();
}

const ClipRule kRules[] = {ClipRule::sd(12.85), ClipRule::sd(4.0), ClipRule::row_max(), ClipRule::percentile(0.9999)};
const int kBits[] = {6, 8};
const ClipSearchMode kModes[] = {ClipSearchMode::Matrix, ClipSearchMode::Row};

}  // namespace

TEST(ClipSearch, NeverWorseThanNoSearchRtn) {
  const int64_t rows = 48, cols = 96;
  int improved = 0;
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const auto w = outlier_matrix(rows, cols, seed);
    for (const ClipRule& rule : kRules)
      for (int bits : kBits)
        for (ClipSearchMode mode : kModes)
          for (bool rate : {true, false}) {
            GptqOptions o;
            o.bits = bits;
            o.clip = rule;
            ClipSearchOptions so;
            so.mode = mode;
            so.rate_constrained = rate;
            const ClipSearchOutcome r = clip_search(w, rows, cols, {}, o, so);
            const QuantizedMatrix base = quantize_rtn(w, rows, cols, bits, rule);
            const double base_sse = squared_error(w, dequantize(base));
            const double sse = squared_error(w, dequantize(r.q));
            EXPECT_NEAR(r.base_error, base_sse, 1e-12 * (1 + base_sse));
            EXPECT_LE(sse, base_sse * (1 + 1e-12)) << rule.describe() << " int" << bits;
            EXPECT_NEAR(r.error, sse, 1e-9 * (1 + sse));
            if (rate) {
              EXPECT_LE(r.cost_bits, r.base_cost_bits * (1 + 1e-12));
            }
            r.q.validate("clip_search");
            if (sse < base_sse * 0.999) ++improved;
          }
  }
  EXPECT_GT(improved, 10);  // the search does find better clips on outlier matrices
}

TEST(ClipSearch, NeverWorseThanNoSearchGptqAndDeterministic) {
  const int64_t rows = 40, cols = 64;
  const auto h = random_hessian(cols, 400, 11);
  const auto w = outlier_matrix(rows, cols, 5);
  for (const ClipRule& rule : {ClipRule::sd(12.85), ClipRule::row_max()})
    for (ClipSearchMode mode : kModes) {
      GptqOptions o;
      o.bits = 6;
      o.clip = rule;
      ClipSearchOptions so;
      so.mode = mode;
      GptqReport rep;
      const QuantizedMatrix base = gptq_quantize(w, rows, cols, h, o, &rep);
      const ClipSearchOutcome a = clip_search(w, rows, cols, h, o, so);
      const ClipSearchOutcome b = clip_search(w, rows, cols, h, o, so);
      EXPECT_NEAR(a.base_error, rep.proxy_error, 1e-9 * rep.proxy_error);
      const double err = hessian_weighted_error(w, dequantize(a.q), rows, cols, h);
      EXPECT_LE(err, rep.proxy_error * (1 + 1e-12)) << rule.describe();
      EXPECT_LE(a.cost_bits, a.base_cost_bits * (1 + 1e-12));
      EXPECT_EQ(a.q.codes, b.q.codes);
      EXPECT_EQ(a.q.scales, b.q.scales);
      EXPECT_EQ(a.row_candidate, b.row_candidate);
      // Splicing rows equals GPTQ with the spliced scales (rows are independent in GPTQ).
      const QuantizedMatrix rerun = gptq_quantize(w, rows, cols, h, o, nullptr, &a.q.scales);
      EXPECT_EQ(rerun.codes, a.q.codes);
    }
}

TEST(ClipSearch, OffIsTheBaseRule) {
  const int64_t rows = 16, cols = 32;
  const auto w = outlier_matrix(rows, cols, 9);
  GptqOptions o;
  o.bits = 6;
  o.clip = ClipRule::sd(12.85);
  const ClipSearchOutcome r = clip_search(w, rows, cols, {}, o, ClipSearchOptions{});
  const QuantizedMatrix base = quantize_rtn(w, rows, cols, 6, o.clip);
  EXPECT_EQ(r.q.codes, base.codes);
  EXPECT_EQ(r.q.scales, base.scales);
  EXPECT_EQ(r.rows_changed, 0);
  ClipSearchMode m;
  EXPECT_TRUE(parse_clip_search_mode("row", &m));
  EXPECT_EQ(m, ClipSearchMode::Row);
  EXPECT_FALSE(parse_clip_search_mode("rows", &m));
}

TEST(ClipSearch, RejectsBadInput) {
  const std::vector<float> w(12, 0.1f);
  GptqOptions o;
  ClipSearchOptions so;
  so.mode = ClipSearchMode::Row;
  so.multipliers = {0.0};
  EXPECT_THROW(clip_search(w, 3, 4, {}, o, so), Error);
  so.multipliers = {};
  EXPECT_THROW(clip_search(w, 3, 5, {}, o, so), Error);
}
