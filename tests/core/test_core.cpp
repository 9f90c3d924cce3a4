#include <gtest/gtest.h>

#include <cmath>

#include "core/arena.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace pgolf;

TEST(Tensor, ViewSliceCopy) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, Shape{3, 2});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.desc(), "f32[3, 2]@cpu");
  Tensor s = t.slice(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.ptr<float>()[0], 2.f);
  Tensor c = Tensor::empty(Shape{2, 2}, DType::F32);
  c.copy_from(s);
  EXPECT_EQ(c.to_float_vector(), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_THROW(t.view(Shape{4}), Error);
  EXPECT_THROW(t.ptr<int32_t>(), Error);
  EXPECT_THROW(t.slice(2, 4), Error);
}

TEST(DType, Bf16RoundTrip) {
  for (float f : {0.f, 1.f, -2.5f, 3.14159f, 1e-20f, 65504.f, -1e30f}) {
    float r = bf16_to_f32(f32_to_bf16(f));
    EXPECT_NEAR(r, f, std::fabs(f) * (1.f / 128.f));
  }
  // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256.f)), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (float f : {0.f, 1.f, -2.5f, 0.333f, 65504.f, 6e-8f}) {
    EXPECT_NEAR(f16_bits_to_f32(f32_to_f16_bits(f)), f, std::fabs(f) * 1e-3f + 1e-7f);
  }
}

TEST(Arena, MeasureThenReserve) {
  Arena a(Device::CPU, "test");
  a.begin_measure();
  Tensor x = a.alloc(Shape{100}, DType::F32);
  EXPECT_EQ(x.data(), nullptr);
  size_t m = a.mark();
  a.alloc(Shape{1000}, DType::BF16);
  a.reset(m);
  a.alloc(Shape{10}, DType::F32);
  size_t peak = a.end_measure();
  EXPECT_GE(peak, 400u + 2000u);
  a.reserve(peak);
  Tensor y = a.alloc(Shape{100}, DType::F32);
  EXPECT_NE(y.data(), nullptr);
  a.alloc(Shape{1000}, DType::BF16);
  EXPECT_THROW(a.alloc(Shape{1000}, DType::F32, "too much"), Error);
}

TEST(Rng, DeterministicAndDistributed) {
  EXPECT_EQ(rng::bits(7, 3).x, rng::bits(7, 3).x);
  EXPECT_NE(rng::bits(7, 3).x, rng::bits(8, 3).x);
  double s = 0, s2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double v = rng::normal(42, static_cast<uint64_t>(i));
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.03);
  EXPECT_NEAR(s2 / n, 1.0, 0.05);
  for (int i = 0; i < 1000; ++i) {
    float u = rng::uniform(1, static_cast<uint64_t>(i), -2.f, 3.f);
    EXPECT_GE(u, -2.f);
    EXPECT_LT(u, 3.f);
  }
}
