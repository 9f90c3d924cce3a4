#include <lzma.h>
#include <sentencepiece_processor.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/encode.h"
#include "data/file_util.h"
#include "data/input.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "data_test_util.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::data;
using namespace pgolf::data::test;

namespace {

std::vector<std::string> read_texts(const std::string& path, ReaderOptions opt = {}) {
  RecordReader r({path}, opt);
  RawRecord rec;
  std::vector<std::string> out;
  while (r.next(rec)) {
    ExtractedDoc d = extract_document(std::move(rec), path, opt.field);
    EXPECT_EQ(d.status, DocStatus::Ok) << d.error;
    out.push_back(d.text);
  }
  return out;
}

std::vector<uint16_t> read_split(const std::string& dir, const std::string& pattern) {
  std::vector<uint16_t> all;
  for (const auto& p : list_shards(dir + "/" + pattern)) {
    auto t = read_shard(p);
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

}  // namespace

// Acceptance: re-encoding the 902 documents (BOS before each, no EOS) reproduces the official tokens exactly.
TEST(Encode, ReproducesOfficialValPrefix) {
  PG_REQUIRE_SHARED(kValShard);
  PG_REQUIRE_SHARED(kValDocs);
  ScratchDir dir;
  EncodeOptions opt;
  opt.inputs = {shared_file(kValDocs)};
  opt.tokenizer = shared_file(kSp1024);
  opt.out_dir = dir.str();
  opt.prefix = "fw";
  opt.val_docs = 902;
  opt.threads = 4;
  EncodeSummary s = encode_corpus(opt);
  EXPECT_EQ(s.val.documents, 902);
  EXPECT_EQ(s.val.bytes, 2'504'867);
  EXPECT_EQ(s.train.documents, 0);
  EXPECT_TRUE(s.train.shards.empty());
  auto expected = read_shard(shared_file(kValShard));
  auto got = read_split(dir.str(), "fw_val_*.bin");
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected);
  // The manifest records what was written.
  auto m = nlohmann::json::parse(read_file(s.manifest_path));
  EXPECT_EQ(m["val"]["tokens"], 1'040'298);
  EXPECT_EQ(m["val"]["shards"][0]["sha256"], sha256_file(dir / "fw_val_000000.bin"));
  EXPECT_EQ(m["tokenizer"]["sha256"], "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a");
}

// Acceptance: decoding the .bin's documents reproduces the documents' text.
TEST(Encode, DecodingReproducesValDocuments) {
  PG_REQUIRE_SHARED(kValShard);
  PG_REQUIRE_SHARED(kValDocs);
  auto sp = load_tokenizer(shared_file(kSp1024));
  auto texts = read_texts(shared_file(kValDocs));
  ASSERT_EQ(texts.size(), 902u);
  auto tokens = read_shard(shared_file(kValShard));
  size_t doc = 0, start = 0;
  for (size_t i = 1; i <= tokens.size(); ++i) {
    if (i < tokens.size() && tokens[i] != kBosId) continue;
    std::vector<int> ids(tokens.begin() + static_cast<long>(start) + 1, tokens.begin() + static_cast<long>(i));
    std::string text;
    ASSERT_TRUE(sp->Decode(ids, &text).ok());
    ASSERT_LT(doc, texts.size());
    ASSERT_EQ(text, texts[doc]) << "document " << doc;
    ++doc;
    start = i;
  }
  EXPECT_EQ(doc, 902u);
}

TEST(Encode, OutputIdenticalAcrossThreadCountsAndShardSplits) {
  PG_REQUIRE_SHARED(kValDocs);
  ScratchDir dir;
  // A small corpus in three formats: jsonl.gz, jsonl.zst, txt.xz.
  auto texts = read_texts(shared_file(kValDocs));
  texts.resize(60);
  {
    gzFile g = gzopen((dir / "a.jsonl.gz").c_str(), "wb");
    for (size_t i = 0; i < 20; ++i) {
      std::string line = nlohmann::json{{"body", texts[i]}}.dump() + "\n";
      gzwrite(g, line.data(), static_cast<unsigned>(line.size()));
    }
    gzclose(g);
    std::string plain;
    for (size_t i = 20; i < 40; ++i) plain += nlohmann::json{{"body", texts[i]}}.dump() + "\n";
    std::string z(ZSTD_compressBound(plain.size()), '\0');
    z.resize(ZSTD_compress(z.data(), z.size(), plain.data(), plain.size(), 3));
    write_file_atomic(dir / "b.jsonl.zst", z);
  }
  auto run = [&](int threads, int64_t shard_tokens, const std::string& out) {
    EncodeOptions opt;
    opt.inputs = {dir / "*.jsonl.*"};
    opt.tokenizer = shared_file(kSp1024);
    opt.out_dir = dir / out;
    opt.prefix = "t";
    opt.val_docs = 5;
    opt.threads = threads;
    opt.shard_tokens = shard_tokens;
    opt.reader.field = "body";
    return encode_corpus(opt);
  };
  EncodeSummary one = run(1, 1'000'000, "one");
  EncodeSummary three = run(5, 1'000, "three");  // 2 files read concurrently
  EXPECT_EQ(one.val.documents, 5);
  EXPECT_EQ(one.train.documents, 35);
  EXPECT_EQ(three.train.tokens, one.train.tokens);
  EXPECT_EQ(one.train.shards.size(), 1u);
  EXPECT_EQ(three.train.shards.size(), static_cast<size_t>((one.train.tokens + 999) / 1000));
  for (const auto& sh : three.train.shards) EXPECT_LE(sh.tokens, 1000);
  EXPECT_TRUE(read_split(dir / "one", "t_train_*.bin") == read_split(dir / "three", "t_train_*.bin"));
  EXPECT_TRUE(read_split(dir / "one", "t_val_*.bin") == read_split(dir / "three", "t_val_*.bin"));
  // Same thread count twice: byte-identical files and manifest.
  run(5, 1'000, "again");
  EXPECT_EQ(read_file(dir / "three/t_train_000001.bin"), read_file(dir / "again/t_train_000001.bin"));
  // Documents = BOS count, and tokens agree with a direct encode.
  auto sp = load_tokenizer(shared_file(kSp1024));
  auto val = read_split(dir / "one", "t_val_*.bin");
  std::vector<uint16_t> direct;
  for (int i = 0; i < 5; ++i) {
    direct.push_back(1);
    for (int id : sp->EncodeAsIds(texts[static_cast<size_t>(i)])) direct.push_back(static_cast<uint16_t>(id));
  }
  EXPECT_TRUE(val == direct);
}

TEST(Encode, SeparateValInputsAndMaxDocs) {
  PG_REQUIRE_SHARED(kSp1024);
  ScratchDir dir;
  write_file_atomic(dir / "val.txt", "first val paragraph\n\nsecond one\n");
  write_file_atomic(dir / "train.txt", "alpha beta\ngamma\n\n\n\ndelta\n\nepsilon\n");
  EncodeOptions opt;
  opt.inputs = {dir / "train.txt"};
  opt.val_inputs = {dir / "val.txt"};
  opt.tokenizer = shared_file(kSp1024);
  opt.out_dir = dir / "out";
  EncodeSummary s = encode_corpus(opt);
  EXPECT_EQ(s.val.documents, 2);
  EXPECT_EQ(s.train.documents, 3);
  EXPECT_EQ(s.train.bytes, static_cast<int64_t>(std::string("alpha beta\ngamma").size() + 5 + 7));
  opt.max_docs = 3;
  opt.out_dir = dir / "limited";
  s = encode_corpus(opt);
  EXPECT_EQ(s.val.documents + s.train.documents, 3);
}

TEST(Encode, BadInputIsAClearErrorOrSkippedAndCounted) {
  PG_REQUIRE_SHARED(kSp1024);
  ScratchDir dir;
  write_file_atomic(dir / "bad.jsonl",
                    "{\"text\": \"good one\"}\n"
                    "{\"text\": \"broken\"\n"
                    "{\"text\": \"\"}\n"
                    "{\"other\": \"x\"}\n"
                    "{\"text\": \"bad \xff\xfe utf8\"}\n"
                    "{\"text\": \"good two\"}\n");
  EncodeOptions opt;
  opt.inputs = {dir / "bad.jsonl"};
  opt.tokenizer = shared_file(kSp1024);
  opt.out_dir = dir / "out";
  std::string e = error_of([&] { encode_corpus(opt); });
  EXPECT_NE(e.find(dir / "bad.jsonl:2: invalid JSON"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "out/data_train_000000.bin"));  // nothing half-written
  opt.skip_bad = true;
  EncodeSummary s = encode_corpus(opt);
  EXPECT_EQ(s.train.documents, 2);
  EXPECT_EQ(s.skipped["invalid_json"], 1);
  EXPECT_EQ(s.skipped["empty"], 1);
  EXPECT_EQ(s.skipped["missing_field"], 1);
  EXPECT_EQ(s.skipped["invalid_utf8"], 1);
  // Each category names file and line when not skipped.
  write_file_atomic(dir / "utf.txt", "ok\n\nbad \xc3\x28 here\n");
  opt.inputs = {dir / "utf.txt"};
  opt.skip_bad = false;
  e = error_of([&] { encode_corpus(opt); });
  EXPECT_NE(e.find(dir / "utf.txt:3: invalid UTF-8"), std::string::npos) << e;
  write_file_atomic(dir / "empty.jsonl", "{\"text\": \"x\"}\n{\"text\": \"\"}\n");
  opt.inputs = {dir / "empty.jsonl"};
  e = error_of([&] { encode_corpus(opt); });
  EXPECT_NE(e.find(dir / "empty.jsonl:2: empty document"), std::string::npos) << e;
  // Corrupt compressed input names the file.
  write_file_atomic(dir / "junk.jsonl.xz", "this is not xz");
  opt.inputs = {dir / "junk.jsonl.xz"};
  e = error_of([&] { encode_corpus(opt); });
  EXPECT_NE(e.find("junk.jsonl.xz"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { expand_inputs({dir / "nothing*.jsonl"}); }), "");
}

TEST(Input, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("\xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\x98\x80"));
  size_t off = 0;
  EXPECT_FALSE(is_valid_utf8("ab\xC0\xAF", &off));  // overlong
  EXPECT_EQ(off, 2u);
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE2\x96"));          // truncated
}

TEST(Input, TextSplitModes) {
  ScratchDir dir;
  const std::string p = dir / "t.txt";
  write_file_atomic(p, "a1\na2\n\nb1\n \nc1\nc2");
  EXPECT_EQ(read_texts(p), (std::vector<std::string>{"a1\na2", "b1", "c1\nc2"}));
  ReaderOptions chunked;
  chunked.txt_chunk_bytes = 6;
  EXPECT_EQ(read_texts(p, chunked), (std::vector<std::string>{"a1\na2\n\nb1", "c1\nc2"}));
  ReaderOptions whole;
  whole.text_split = TextSplit::File;
  EXPECT_EQ(read_texts(p, whole), (std::vector<std::string>{"a1\na2\n\nb1\n \nc1\nc2"}));
}

TEST(Tokenizer, TrainsWithOfficialSettings) {
  PG_REQUIRE_SHARED(kValDocs);
  ScratchDir dir;
  RecordReader r({shared_file(kValDocs)}, {});
  RawRecord rec;
  int n = 0;
  auto next = [&](std::string& text) {
    if (n >= 150 || !r.next(rec)) return false;
    text = extract_document(std::move(rec), "val", "text").text;
    ++n;
    return true;
  };
  TokenizerTrainOptions opt;
  opt.vocab_size = 400;
  opt.num_threads = 2;
  train_tokenizer(next, dir / "tok", opt);
  auto sp = load_tokenizer(dir / "tok.model");
  EXPECT_EQ(sp->GetPieceSize(), 400);
  EXPECT_TRUE(sp->IsControl(0) || sp->IsUnused(0));  // pad
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
  EXPECT_EQ(sp->unk_id(), 3);
  int byte_pieces = 0;
  for (int i = 0; i < sp->GetPieceSize(); ++i) byte_pieces += sp->IsByte(i);
  EXPECT_EQ(byte_pieces, 256);  // byte_fallback
  // split_digits: every digit is its own piece; no dummy prefix: no leading ▁ on the first word.
  auto pieces = sp->EncodeAsPieces("Year 2024");
  ASSERT_GE(pieces.size(), 5u);
  EXPECT_NE(pieces.front().rfind("\xE2\x96\x81", 0), 0u) << pieces.front();
  EXPECT_EQ(std::vector<std::string>(pieces.end() - 4, pieces.end()), (std::vector<std::string>{"2", "0", "2", "4"}));
  EXPECT_TRUE(std::filesystem::exists(dir / "tok.vocab"));
  opt.vocab_size = 70000;
  EXPECT_THROW(train_tokenizer(next, dir / "big", opt), Error);
}
