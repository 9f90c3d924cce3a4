#pragma once
// Challenge shard files (TECHNIQUES.md §2.1): 256 little-endian int32 header
// (magic 20240520, version 1, n_tokens, rest 0) followed by n_tokens uint16 token ids.
// Every reader validates the header and the exact file size and names the file in its errors.
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr size_t kShardHeaderInts = 256;
constexpr size_t kShardHeaderBytes = kShardHeaderInts * 4;

struct ShardInfo {
  std::string path;
  int64_t n_tokens = 0;
};

// Reads and validates only the header (and the file size against it).
ShardInfo read_shard_header(const std::string& path);
// Reads the whole shard's tokens.
std::vector<uint16_t> read_shard(const std::string& path);
// Reads tokens [begin, begin + count) of a shard without loading the rest.
std::vector<uint16_t> read_shard_range(const std::string& path, int64_t begin, int64_t count);
// Writes atomically (temporary file in the same folder, fsync, rename).
void write_shard(const std::string& path, const uint16_t* tokens, int64_t n_tokens);
// Expands a file, a folder (every *.bin inside) or a glob into a sorted list of shard paths;
// fails naming the pattern when nothing matches.
std::vector<std::string> list_shards(const std::string& pattern);

// Read-only memory mapping of one shard's token array (only the pages read are loaded).
class MappedShard {
 public:
  enum class Access { Sequential, Random };  // a hint to the kernel's read-ahead
  MappedShard() = default;
  MappedShard(const ShardInfo& info, Access access);  // fails naming the file
  ~MappedShard();
  MappedShard(MappedShard&& o) noexcept;
  MappedShard& operator=(MappedShard&& o) noexcept;
  const uint16_t* tokens() const;
  int64_t size() const { return n_; }

 private:
  void reset();
  void* base_ = nullptr;
  size_t bytes_ = 0;
  int64_t n_ = 0;
};

// Largest token id in a shard (-1 when empty); streams the file in chunks.
int max_token_id(const std::string& path);
// Fails naming the shard when it holds an id >= vocab_size (a tokenizer / model vocabulary mismatch).
void check_tokens_fit(const std::string& path, int vocab_size);

}  // namespace pgolf::data
