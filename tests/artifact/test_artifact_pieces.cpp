#include <gtest/gtest.h>

#include <random>

#include "artifact/bitpack.h"
#include "artifact/compress.h"
#include "core/error.h"

using namespace pgolf;
using namespace pgolf::artifact;

TEST(Bitpack, ExactRoundTripForEveryWidth) {
  std::mt19937 g(5);
  for (int bits = 2; bits <= 8; ++bits) {
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{1001}}) {
      std::uniform_int_distribution<int> d(lo, hi);
      std::vector<int8_t> v(n);
      for (auto& x : v) x = static_cast<int8_t>(d(g));
      if (n > 2) {
        v[0] = static_cast<int8_t>(lo);
        v[1] = static_cast<int8_t>(hi);
      }
      auto p = pack_signed(v, bits);
      EXPECT_EQ(p.size(), (n * static_cast<size_t>(bits) + 7) / 8);
      EXPECT_EQ(unpack_signed(p, bits, n, "t"), v) << "bits " << bits << " n " << n;
    }
  }
}

TEST(Bitpack, RejectsOutOfRangeAndBadSizes) {
  std::vector<int8_t> v{0, 16};
  EXPECT_THROW(pack_signed(v, 5), Error);  // int5 holds [-16, 15]
  std::vector<int8_t> ok{1, -2, 3};
  auto p = pack_signed(ok, 6);
  EXPECT_THROW(unpack_signed(std::span<const uint8_t>(p).subspan(1), 6, 3, "t"), Error);
  p.back() |= 0x80;  // 18 bits used, so the top bits of byte 3 are padding
  EXPECT_THROW(unpack_signed(p, 6, 3, "t"), Error);
}

TEST(Compress, EveryCompressorRoundTrips) {
  std::mt19937 g(9);
  std::vector<uint8_t> data(20000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i % 17 == 0) ? g() : (i / 64) % 7);
  for (Compressor c : all_compressors()) {
    auto z = compress(c, data);
    if (c != Compressor::None) {
      EXPECT_LT(z.size(), data.size()) << compressor_name(c);
    }
    EXPECT_EQ(decompress(c, z, data.size(), "t"), data) << compressor_name(c);
    EXPECT_THROW(decompress(c, z, data.size() + 1, "t"), Error) << compressor_name(c);
    Compressor parsed;
    ASSERT_TRUE(parse_compressor(compressor_name(c), &parsed));
    EXPECT_EQ(parsed, c);
    std::vector<uint8_t> empty;
    EXPECT_EQ(decompress(c, compress(c, empty), 0, "t"), empty) << compressor_name(c);
  }
  auto z = compress(Compressor::Brotli11, data);
  z[z.size() / 2] ^= 0x5a;
  EXPECT_THROW(decompress(Compressor::Brotli11, z, data.size(), "t"), Error);
}

TEST(Compress, ShuffleIsAPermutationThatUndoes) {
  std::vector<uint8_t> d{0, 1, 2, 3, 4, 5, 6};
  EXPECT_EQ(shuffle_bytes(d, 2), (std::vector<uint8_t>{0, 2, 4, 6, 1, 3, 5}));
  for (int s : {1, 2, 3, 4}) EXPECT_EQ(unshuffle_bytes(shuffle_bytes(d, s), s), d);
  EXPECT_NE(xxh64(d), xxh64(shuffle_bytes(d, 2)));
}
