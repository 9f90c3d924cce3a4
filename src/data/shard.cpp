#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "data/file_util.h"

namespace pgolf::data {

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

FilePtr open_read(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  PG_CHECK(f, "cannot open shard {}: {}", path, std::strerror(errno));
  return f;
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  PG_CHECK(::stat(path.c_str(), &st) == 0, "cannot stat {}: {}", path, std::strerror(errno));
  return static_cast<int64_t>(st.st_size);
}

}  // namespace

ShardInfo read_shard_header(const std::string& path) {
  const int64_t size = file_size(path);
  PG_CHECK(size >= static_cast<int64_t>(kShardHeaderBytes),
           "shard {} is truncated: {} bytes, smaller than the {}-byte header", path, size, kShardHeaderBytes);
  auto f = open_read(path);
  int32_t header[kShardHeaderInts];
  PG_CHECK(std::fread(header, 4, kShardHeaderInts, f.get()) == kShardHeaderInts, "cannot read the header of {}",
           path);
  PG_CHECK(header[0] == kShardMagic, "{} is not a shard: magic {} (expected {})", path, header[0], kShardMagic);
  PG_CHECK(header[1] == kShardVersion, "shard {} has version {} (only version {} is supported)", path, header[1],
           kShardVersion);
  PG_CHECK(header[2] >= 0, "shard {} has a negative token count {}", path, header[2]);
  const int64_t n = header[2];
  const int64_t expected = static_cast<int64_t>(kShardHeaderBytes) + 2 * n;
  PG_CHECK(size == expected, "shard {} is mis-sized: header says {} tokens, so {} bytes expected, file has {} bytes",
           path, n, expected, size);
  return ShardInfo{path, n};
}

std::vector<uint16_t> read_shard_range(const std::string& path, int64_t begin, int64_t count) {
  ShardInfo info = read_shard_header(path);
  PG_CHECK(begin >= 0 && count >= 0 && begin + count <= info.n_tokens,
           "range [{}, {}) is outside shard {} ({} tokens)", begin, begin + count, path, info.n_tokens);
  std::vector<uint16_t> out(static_cast<size_t>(count));
  if (count == 0) return out;
  auto f = open_read(path);
  PG_CHECK(std::fseek(f.get(), static_cast<long>(kShardHeaderBytes + 2 * begin), SEEK_SET) == 0,
           "seek in {} failed", path);
  PG_CHECK(std::fread(out.data(), 2, out.size(), f.get()) == out.size(), "short read of {} (file changed?)", path);
  return out;  // little-endian on disk; every supported host is little-endian
}

std::vector<uint16_t> read_shard(const std::string& path) {
  ShardInfo info = read_shard_header(path);
  return read_shard_range(path, 0, info.n_tokens);
}

void write_shard(const std::string& path, const uint16_t* tokens, int64_t n_tokens) {
  PG_CHECK(n_tokens >= 0 && n_tokens <= INT32_MAX, "cannot write {} tokens into one shard {}", n_tokens, path);
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(n_tokens);
  AtomicFile f(path);
  f.write(header, sizeof header);
  f.write(tokens, static_cast<size_t>(n_tokens) * 2);
  f.commit();
}

std::vector<std::string> list_shards(const std::string& pattern) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  if (fs::is_directory(pattern, ec)) {
    for (const auto& e : fs::directory_iterator(pattern))
      if (e.is_regular_file() && e.path().extension() == ".bin") out.push_back(e.path().string());
  } else if (fs::is_regular_file(pattern, ec)) {
    out.push_back(pattern);
  } else {
    glob_t g{};
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  std::sort(out.begin(), out.end());
  PG_CHECK(!out.empty(), "no shard matches {}", pattern);
  return out;
}

int max_token_id(const std::string& path) {
  ShardInfo info = read_shard_header(path);
  auto f = open_read(path);
  PG_CHECK(std::fseek(f.get(), static_cast<long>(kShardHeaderBytes), SEEK_SET) == 0, "seek in {} failed", path);
  std::vector<uint16_t> buf(1 << 20);
  int max_id = -1;
  for (int64_t left = info.n_tokens; left > 0;) {
    size_t n = static_cast<size_t>(std::min<int64_t>(left, static_cast<int64_t>(buf.size())));
    PG_CHECK(std::fread(buf.data(), 2, n, f.get()) == n, "short read of {}", path);
    for (size_t i = 0; i < n; ++i) max_id = std::max<int>(max_id, buf[i]);
    left -= static_cast<int64_t>(n);
  }
  return max_id;
}

void check_tokens_fit(const std::string& path, int vocab_size) {
  const int max_id = max_token_id(path);
  PG_CHECK(max_id < vocab_size, "shard {} holds token id {} but the vocabulary has only {} entries "
           "(tokenizer / model vocabulary mismatch)", path, max_id, vocab_size);
}

MappedShard::MappedShard(const ShardInfo& info, Access access) : n_(info.n_tokens) {
  const size_t bytes = kShardHeaderBytes + 2 * static_cast<size_t>(n_);
  int fd = ::open(info.path.c_str(), O_RDONLY);
  PG_CHECK(fd >= 0, "cannot open shard {}: {}", info.path, std::strerror(errno));
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  PG_CHECK(p != MAP_FAILED, "cannot map shard {}: {}", info.path, std::strerror(err));
  ::madvise(p, bytes, access == Access::Sequential ? MADV_SEQUENTIAL : MADV_RANDOM);
  base_ = p;
  bytes_ = bytes;
}

MappedShard::~MappedShard() { reset(); }

MappedShard::MappedShard(MappedShard&& o) noexcept { *this = std::move(o); }

MappedShard& MappedShard::operator=(MappedShard&& o) noexcept {
  if (this != &o) {
    reset();
    std::swap(base_, o.base_);
    std::swap(bytes_, o.bytes_);
    std::swap(n_, o.n_);
  }
  return *this;
}

const uint16_t* MappedShard::tokens() const {
  return reinterpret_cast<const uint16_t*>(static_cast<const char*>(base_) + kShardHeaderBytes);
}

void MappedShard::reset() {
  if (base_) ::munmap(base_, bytes_);
  base_ = nullptr;
  bytes_ = 0;
  n_ = 0;
}

}  // namespace pgolf::data
