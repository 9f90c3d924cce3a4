#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/file_util.h"
#include "data/shard.h"
#include "data_test_util.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::data;
using pgolf::data::test::ScratchDir;

namespace {

void write_raw(const std::string& path, const std::vector<int32_t>& header, const std::vector<uint16_t>& tokens) {
  std::ofstream f(path, std::ios::binary);
  std::vector<int32_t> h(kShardHeaderInts, 0);
  std::copy(header.begin(), header.end(), h.begin());
  f.write(reinterpret_cast<const char*>(h.data()), static_cast<std::streamsize>(h.size() * 4));
  f.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
}

}  // namespace

TEST(Shard, WriteReadRoundTripAndRange) {
  ScratchDir dir;
  std::vector<uint16_t> tokens = {1, 500, 65535, 0, 42, 7};
  const std::string p = dir / "x_train_000000.bin";
  write_shard(p, tokens.data(), static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(std::filesystem::file_size(p), kShardHeaderBytes + 2 * tokens.size());
  EXPECT_EQ(read_shard_header(p).n_tokens, 6);
  EXPECT_EQ(read_shard(p), tokens);
  EXPECT_EQ(read_shard_range(p, 2, 3), (std::vector<uint16_t>{65535, 0, 42}));
  EXPECT_THROW(read_shard_range(p, 4, 3), Error);
  EXPECT_EQ(max_token_id(p), 65535);
  // No temporary file survives a committed write.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.str())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Shard, RejectsBadHeadersNamingTheFile) {
  ScratchDir dir;
  const std::string magic = dir / "magic.bin", version = dir / "version.bin", trunc = dir / "trunc.bin",
                    tiny = dir / "tiny.bin";
  write_raw(magic, {20240521, 1, 2}, {1, 2});
  write_raw(version, {kShardMagic, 2, 2}, {1, 2});
  write_raw(trunc, {kShardMagic, 1, 5}, {1, 2, 3});
  { std::ofstream(tiny) << "short"; }
  std::string e = error_of([&] { read_shard_header(magic); });
  EXPECT_NE(e.find("magic 20240521"), std::string::npos) << e;
  EXPECT_NE(e.find(magic), std::string::npos) << e;
  e = error_of([&] { read_shard(version); });
  EXPECT_NE(e.find("version 2"), std::string::npos) << e;
  e = error_of([&] { read_shard(trunc); });
  EXPECT_NE(e.find("1034 bytes expected, file has 1030 bytes"), std::string::npos) << e;
  EXPECT_NE(e.find(trunc), std::string::npos) << e;
  e = error_of([&] { read_shard(tiny); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { read_shard(dir / "missing.bin"); }), "");
}

TEST(Shard, CheckTokensFitReportsVocabularyMismatch) {
  ScratchDir dir;
  std::vector<uint16_t> tokens = {1, 5, 1023, 1024};
  const std::string p = dir / "s.bin";
  write_shard(p, tokens.data(), 4);
  EXPECT_NO_THROW(check_tokens_fit(p, 1025));
  std::string e = error_of([&] { check_tokens_fit(p, 1024); });
  EXPECT_NE(e.find("token id 1024"), std::string::npos) << e;
  EXPECT_NE(e.find(p), std::string::npos) << e;
}

TEST(Shard, ListShardsSortsFoldersAndGlobs) {
  ScratchDir dir;
  uint16_t t = 1;
  for (const char* name : {"d_train_000001.bin", "d_train_000000.bin", "d_val_000000.bin"})
    write_shard(dir / name, &t, 1);
  { std::ofstream(dir / "notes.txt") << "x"; }
  auto all = list_shards(dir.str());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], dir / "d_train_000000.bin");
  auto train = list_shards(dir / "d_train_*.bin");
  ASSERT_EQ(train.size(), 2u);
  EXPECT_EQ(train[1], dir / "d_train_000001.bin");
  EXPECT_EQ(list_shards(dir / "d_val_000000.bin").size(), 1u);
  EXPECT_THROW(list_shards(dir / "nothing_*.bin"), Error);
}

TEST(AtomicFile, UncommittedWriteLeavesNothing) {
  ScratchDir dir;
  const std::string p = dir / "out.bin";
  {
    AtomicFile f(p);
    f.write("partial");
    EXPECT_TRUE(std::filesystem::exists(f.temp_path()));
  }  // destroyed without commit, as on an exception
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_TRUE(std::filesystem::is_empty(dir.str()));
  write_file_atomic(p, "done");
  EXPECT_EQ(read_file(p), "done");
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Incremental updates across block boundaries give the same digest.
  std::string big(1000, 'a');
  Sha256 h;
  for (size_t i = 0; i < big.size(); i += 7) h.update(big.data() + i, std::min<size_t>(7, big.size() - i));
  EXPECT_EQ(h.hex(), sha256_hex(big));
}
