#include <sentencepiece_processor.h>

#include "data/doc_encoder.h"
#include "data/tokenizer.h"
#include "data_test_util.h"

using namespace pgolf::data;
using namespace pgolf::data::test;

// The chunked fast path must give exactly SentencePiece's whole-document ids, including around the places
// where chunking is NOT allowed (several spaces, unicode spaces, newlines, combining marks, digits, unknowns).
TEST(DocEncoder, ChunkedEqualsWholeDocument) {
  PG_REQUIRE_SHARED(kSp1024);
  auto sp = load_tokenizer(shared_file(kSp1024));
  ASSERT_TRUE(chunking_is_exact(*sp));
  DocEncoder fast(*sp, true), slow(*sp, false);
  ASSERT_TRUE(fast.chunked());
  const std::vector<std::string> docs = {
      "The quick brown fox jumps over the lazy dog.",
      "  leading and trailing spaces  ",
      "double  spaces and\ttabs\nand new\n\nlines here",
      "non\xC2\xA0" "breaking space, ideographic\xE3\x80\x80space, zero\xE2\x80\x8Bwidth \xE2\x80\x8B alone",
      "caf\x65\xCC\x81 combining e\xCC\x81 and \xEF\xAC\x81 ligature, full\xEF\xBC\xA1width",
      "numbers 1234567 and 3.14159 and 2024-11-23",
      "emoji \xF0\x9F\x98\x80 and CJK \xE4\xB8\xAD\xE6\x96\x87 and \xE2\x96\x81 literal marker",
      "a",
      " x",
      "x y z the the the the",
  };
  for (const auto& d : docs) {
    std::vector<uint16_t> a, b;
    fast.encode(d, a, "test");
    slow.encode(d, b, "test");
    EXPECT_EQ(a, b) << d;
    // Second time through the cache.
    a.clear();
    fast.encode(d, a, "test");
    EXPECT_EQ(a, b) << d;
  }
}
