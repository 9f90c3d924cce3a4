#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quantize.h"

using namespace pgolf;
using namespace pgolf::quant;

namespace {
std::vector<float> gaussian(size_t n, float sd, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace

TEST(Quantize, QmaxPerBits) {
  EXPECT_EQ(qmax_for_bits(5), 15);
  EXPECT_EQ(qmax_for_bits(6), 31);
  EXPECT_EQ(qmax_for_bits(7), 63);
  EXPECT_EQ(qmax_for_bits(8), 127);
  EXPECT_THROW(qmax_for_bits(9), Error);
  EXPECT_THROW(qmax_for_bits(1), Error);
}

TEST(Quantize, RtnRowMaxErrorWithinHalfStep) {
  const int64_t rows = 7, cols = 33;
  auto w = gaussian(rows * cols, 0.05f, 1);
  for (int bits : {5, 6, 7, 8}) {
    QuantizedMatrix q = quantize_rtn(w, rows, cols, bits, ClipRule::row_max());
    q.validate("test");
    auto deq = dequantize(q);
    for (int64_t r = 0; r < rows; ++r) {
      const float s = q.scale(r);
      int max_abs_code = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        EXPECT_LE(std::fabs(w[i] - deq[i]), 0.5f * s * 1.0001f + 1e-7f) << "bits " << bits;
        EXPECT_EQ(deq[i], static_cast<float>(q.codes[i]) * s);
        max_abs_code = std::max(max_abs_code, std::abs(static_cast<int>(q.codes[i])));
      }
      // The row max maps to qmax (up to fp16 rounding of the scale).
      EXPECT_GE(max_abs_code, q.qmax() - 1);
    }
  }
}

TEST(Quantize, SdClipAndPercentileClips) {
  const int64_t rows = 3, cols = 1000;
  auto w = gaussian(rows * cols, 1.f, 2);
  w[5] = 100.f;  // an outlier in row 0
  auto sd = row_clips(w, rows, cols, ClipRule::sd(2.0));
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < cols; ++c) m += w[static_cast<size_t>(r * cols + c)];
    m /= cols;
    for (int64_t c = 0; c < cols; ++c) v += std::pow(w[static_cast<size_t>(r * cols + c)] - m, 2);
    EXPECT_NEAR(sd[static_cast<size_t>(r)], 2.0 * std::sqrt(v / cols), 1e-4);
  }
  auto pmax = row_clips(w, rows, cols, ClipRule::percentile(1.0));
  auto rmax = row_clips(w, rows, cols, ClipRule::row_max());
  EXPECT_EQ(pmax, rmax);
  EXPECT_EQ(rmax[0], 100.f);
  auto p99 = row_clips(w, rows, cols, ClipRule::percentile(0.99));
  EXPECT_LT(p99[0], 10.f);  // the outlier is clipped away
  // Linear interpolation: quantile 0.5 of |{1,2,3,4}| is 2.5.
  std::vector<float> small{-1, 2, -3, 4};
  EXPECT_FLOAT_EQ(row_clips(small, 1, 4, ClipRule::percentile(0.5))[0], 2.5f);
  // Saturation: values beyond the clip land on ±qmax.
  QuantizedMatrix q = quantize_rtn(w, rows, cols, 6, ClipRule::percentile(0.99));
  EXPECT_EQ(q.codes[5], 31);
  EXPECT_THROW(row_clips(w, rows, cols, ClipRule::percentile(1.5)), Error);
  EXPECT_THROW(row_clips(w, rows, cols + 1, ClipRule::row_max()), Error);
}

TEST(Quantize, ScalesAreFp16AndPositive) {
  std::vector<float> clips{0.f, 1e-12f, 31.f, 1e9f};
  auto s = scales_from_clips(clips, 6);
  EXPECT_GT(f16_bits_to_f32(s[0]), 0.f);  // zero row still gets a usable scale
  EXPECT_GT(f16_bits_to_f32(s[1]), 0.f);
  EXPECT_EQ(f16_bits_to_f32(s[2]), 1.f);
  EXPECT_EQ(f16_bits_to_f32(s[3]), 65504.f);
  auto floored = scales_from_clips(clips, 6, 1.f / 31.f);
  EXPECT_NEAR(f16_bits_to_f32(floored[0]), 1.f / 31.f, 1e-4);
  // An all-zero row quantizes to zeros and dequantizes to exact zeros.
  std::vector<float> zeros(8, 0.f);
  auto q = quantize_rtn(zeros, 2, 4, 6, ClipRule::sd(12.f));
  for (float x : dequantize(q)) EXPECT_EQ(x, 0.f);
}

TEST(Quantize, ValidateCatchesBadCodes) {
  auto w = gaussian(12, 1.f, 3);
  QuantizedMatrix q = quantize_rtn(w, 3, 4, 5, ClipRule::row_max());
  q.validate("ok");
  q.codes[2] = 16;  // int5 allows [-15, 15]
  EXPECT_THROW(q.validate("bad"), Error);
  q.codes[2] = 0;
  q.scales[1] = 0;
  EXPECT_THROW(q.validate("bad"), Error);
}

TEST(Quantize, ClipSearchKeepsTheBestCandidate) {
  const int64_t rows = 16, cols = 256;
  auto w = gaussian(rows * cols, 0.02f, 4);
  for (int i = 0; i < 10; ++i) w[static_cast<size_t>(i * 397 % (rows * cols))] *= 30.f;  // heavy tails
  auto cands = gptq_lite_candidates();
  ClipSearchResult best = clip_search_rtn(w, rows, cols, 6, cands);
  for (const ClipRule& r : cands) {
    auto q = quantize_rtn(w, rows, cols, 6, r);
    EXPECT_LE(best.sse, squared_error(w, dequantize(q))) << r.describe();
  }
  EXPECT_EQ(best.sse, squared_error(w, dequantize(best.q)));
}

TEST(Quantize, F16Passthrough) {
  std::vector<float> x{0.f, 1.f, -0.333f, 1000.f};
  auto back = from_f16(to_f16(x));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(back[i], x[i], std::fabs(x[i]) * 1e-3f);
  EXPECT_EQ(to_f16(back), to_f16(x));  // idempotent
}
