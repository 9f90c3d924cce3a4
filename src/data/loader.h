#pragma once
// Training / validation token loaders reproducing the baseline reference (TECHNIQUES.md §2.5).
//
// TokenStream: strictly sequential over the sorted shards of a pattern, wrapping around to the first
// shard after the last; next_span(n) returns the next n contiguous tokens, crossing shard boundaries.
// Only the current shard is mapped in memory (mmap), so a stream over many 200 MB shards stays small.
//
// DistributedTokenLoader: per micro-step, local_tokens = global_tokens / (world * grad_accum); the stream
// yields ONE chunk of (local_tokens + 1) * world tokens, rank r takes [r * (local_tokens + 1), +local_tokens + 1),
// x = span[:-1], y = span[1:], each a row-major (local_tokens / seq_len, seq_len) int32 matrix.
// Every rank must call next_batch the same number of times (each call consumes the whole chunk), exactly as
// the reference; next_batch_all_ranks serves a single process that drives every rank from one stream.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pgolf::data {

class TokenStream {
 public:
  // Position in the stream: which shard (index into the sorted list) and which token inside it.
  // Saved in checkpoints; restore() checks it against the current shard list.
  struct State {
    int64_t shard = 0;
    int64_t pos = 0;
  };

  // pattern: a shard file, a folder (every *.bin inside) or a glob (see list_shards). Validates every header.
  explicit TokenStream(const std::string& pattern);
  ~TokenStream();
  TokenStream(TokenStream&&) noexcept;
  TokenStream& operator=(TokenStream&&) noexcept;

  // The next n tokens (n >= 0), wrapping around the shard list as often as needed.
  std::vector<uint16_t> next_span(int64_t n);
  // Same, widened into out[0..n) as int32 (what the trainer uploads).
  void next_span(int64_t n, int32_t* out);

  State state() const;
  void restore(const State& s);  // fails naming the shard when s is out of range

  const std::vector<std::string>& shards() const;
  int64_t total_tokens() const;  // sum over all shards

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct Batch {
  std::vector<int32_t> x;  // (rows, seq_len) inputs
  std::vector<int32_t> y;  // (rows, seq_len) targets, x shifted by one
  int64_t rows = 0;
  int64_t seq_len = 0;
};

// Tokens per rank and micro-step (global / (world x grad_accum)) and the rows of seq_len they make; fails
// clearly when the sizes do not divide.
struct SplitSizes {
  int64_t local_tokens;
  int64_t rows;
};
SplitSizes split_sizes(int64_t global_tokens, int64_t seq_len, int world, int grad_accum);

class DistributedTokenLoader {
 public:
  explicit DistributedTokenLoader(const std::string& pattern);

  // One micro-step's batch for `rank`. global_tokens must be divisible by world * grad_accum, and the
  // resulting local_tokens by seq_len (clear error otherwise).
  Batch next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum);
  // The batches of ranks 0..world-1 for one micro-step, cut from the same single chunk.
  std::vector<Batch> next_batch_all_ranks(int64_t global_tokens, int64_t seq_len, int world, int grad_accum);

  using State = TokenStream::State;
  State state() const { return stream_.state(); }
  void restore(const State& s) { stream_.restore(s); }
  TokenStream& stream() { return stream_; }

 private:
  TokenStream stream_;
};

// Concatenation of every val shard matching pattern (sorted), trimmed to ((n - 1) / seq_len) * seq_len + 1
// tokens, as the reference's load_validation_tokens. Fails naming the pattern when fewer than seq_len + 1 tokens.
std::vector<uint16_t> load_val_tokens(const std::string& pattern, int64_t seq_len);

}  // namespace pgolf::data
