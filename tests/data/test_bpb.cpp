#include <sentencepiece_processor.h>

#include <cmath>

#include "core/error.h"
#include "data/bpb.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "data_test_util.h"

using namespace pgolf;
using namespace pgolf::data;
using namespace pgolf::data::test;

// Acceptance: the official val prefix has exactly 1,040,297 scored targets and 2,504,867 scored bytes.
TEST(Bpb, OfficialValPrefixCounts) {
  PG_REQUIRE_SHARED(kValShard);
  PG_REQUIRE_SHARED(kSp1024);
  auto tokens = read_shard(shared_file(kValShard));
  ASSERT_EQ(tokens.size(), 1'040'298u);
  ByteLuts luts = build_byte_luts(shared_file(kSp1024), 1024);
  const auto n = static_cast<int64_t>(tokens.size());
  EXPECT_EQ(n - 1, 1'040'297);
  EXPECT_EQ(count_scored_bytes(luts, tokens.data(), 1, n), 2'504'867);
  // Splitting the range into chunks (as ranks / windows do) gives the same total.
  const int64_t mid = 400'001;
  EXPECT_EQ(count_scored_bytes(luts, tokens.data(), 1, mid) + count_scored_bytes(luts, tokens.data(), mid, n),
            2'504'867);
}

TEST(Bpb, LutsFollowTheSpec) {
  PG_REQUIRE_SHARED(kSp1024);
  auto sp = load_tokenizer(shared_file(kSp1024));
  ByteLuts luts = build_byte_luts(shared_file(kSp1024), 1088);  // padded model vocabulary
  ASSERT_EQ(luts.base_bytes.size(), 1088u);
  EXPECT_EQ(luts.sp_vocab, 1024);
  for (int id : {0, 1, 2, 3}) {  // pad, bos, eos (control) and unk
    EXPECT_TRUE(luts.is_boundary[id]) << id;
    EXPECT_EQ(luts.base_bytes[id], 0) << id;
  }
  for (int id = 1024; id < 1088; ++id) EXPECT_TRUE(luts.is_boundary[id]);
  const int space = sp->PieceToId("\xE2\x96\x81");
  // Values from parsing the .model protobuf independently (TECHNIQUES.md §2.3's table says 940 / 476 / no byte
  // pieces for this file, which the exact 2,504,867-byte count above contradicts).
  EXPECT_EQ(space, 939);
  EXPECT_EQ(luts.base_bytes[space], 0);
  EXPECT_TRUE(luts.has_leading_space[space]);
  int leading = 0;
  for (int i = 0; i < 1024; ++i) leading += luts.has_leading_space[i];
  EXPECT_EQ(leading, 325);
  int byte_pieces = 0;
  for (int i = 0; i < 1024; ++i)
    if (sp->IsByte(i)) {
      ++byte_pieces;
      EXPECT_EQ(luts.base_bytes[i], 1);
      EXPECT_FALSE(luts.is_boundary[i]);
    }
  EXPECT_EQ(byte_pieces, 256);
  // The leading-space byte is charged only after a non-boundary token.
  const uint16_t seq[] = {1, static_cast<uint16_t>(space), static_cast<uint16_t>(space)};
  EXPECT_EQ(count_scored_bytes(luts, seq, 1, 3), 0 + 1);
  EXPECT_THROW(build_byte_luts(shared_file(kSp1024), 512), Error);  // model vocab smaller than the tokenizer
}

TEST(Bpb, OutOfTableIdsAreAnErrorNotAWrongNumber) {
  ByteLuts luts;
  luts.base_bytes.assign(4, 1);
  luts.has_leading_space.assign(4, 0);
  luts.is_boundary.assign(4, 0);
  const uint16_t ok[] = {0, 1, 2, 3};
  EXPECT_EQ(count_scored_bytes(luts, ok, 1, 4), 3);
  const uint16_t bad[] = {0, 1, 9};
  EXPECT_THROW(count_scored_bytes(luts, bad, 1, 3), Error);
  EXPECT_THROW(count_scored_bytes(luts, ok, 0, 4), Error);
}

// §3.2 sanity test: the bytes charged over a document equal the UTF-8 length of its decoded text.
TEST(Bpb, DocumentBytesEqualDecodedLength) {
  PG_REQUIRE_SHARED(kValShard);
  PG_REQUIRE_SHARED(kSp1024);
  auto sp = load_tokenizer(shared_file(kSp1024));
  ByteLuts luts = build_byte_luts(shared_file(kSp1024), 0);
  auto tokens = read_shard_range(shared_file(kValShard), 0, 200'000);
  int docs = 0;
  size_t start = 0;  // index of a BOS
  for (size_t i = 1; i <= tokens.size(); ++i) {
    if (i < tokens.size() && tokens[i] != kBosId) continue;
    if (i == tokens.size()) break;  // the last document may be cut by the range
    std::vector<int> ids(tokens.begin() + static_cast<long>(start) + 1, tokens.begin() + static_cast<long>(i));
    std::string text;
    ASSERT_TRUE(sp->Decode(ids, &text).ok());
    const int64_t bytes = count_scored_bytes(luts, tokens.data(), static_cast<int64_t>(start) + 1, static_cast<int64_t>(i));
    ASSERT_EQ(bytes, static_cast<int64_t>(text.size())) << "document " << docs;
    ++docs;
    start = i;
  }
  EXPECT_GT(docs, 50);
}

TEST(Bpb, AccumulatorMergesAndConverts) {
  BpbAccumulator a, b;
  a.add(10.0, 4, 8);
  b.add(6.0, 2, 4);
  a.merge(b);
  EXPECT_EQ(a.tokens, 6);
  EXPECT_EQ(a.bytes, 12);
  EXPECT_DOUBLE_EQ(a.loss(), 16.0 / 6);
  EXPECT_DOUBLE_EQ(a.bpb(), 16.0 / (std::log(2.0) * 12));
  EXPECT_TRUE(std::isnan(BpbAccumulator{}.bpb()));
}
