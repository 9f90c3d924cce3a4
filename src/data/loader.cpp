#include "data/loader.h"

#include "core/error.h"
#include "data/shard.h"

namespace pgolf::data {

struct TokenStream::Impl {
  std::vector<std::string> paths;
  std::vector<int64_t> sizes;
  int64_t total = 0;
  int64_t shard = 0;  // index into paths of the mapped shard
  int64_t pos = 0;    // next token inside it
  MappedShard mapped;

  void open(int64_t index) {
    mapped = MappedShard(ShardInfo{paths[static_cast<size_t>(index)], sizes[static_cast<size_t>(index)]},
                         MappedShard::Access::Sequential);
    shard = index;
    pos = 0;
  }

  // Copies the next n tokens through emit(ptr, count), advancing shards (with wrap-around) when exhausted.
  template <class Emit>
  void take(int64_t n, Emit&& emit) {
    PG_CHECK(n >= 0, "TokenStream: negative span {}", n);
    PG_CHECK(n == 0 || total > 0, "TokenStream: every shard of {} is empty", paths.front());
    while (n > 0) {
      const int64_t avail = mapped.size() - pos;
      if (avail <= 0) {
        open((shard + 1) % static_cast<int64_t>(paths.size()));
        continue;
      }
      const int64_t k = std::min(n, avail);
      emit(mapped.tokens() + pos, k);
      pos += k;
      n -= k;
    }
  }
};

TokenStream::TokenStream(const std::string& pattern) : impl_(std::make_unique<Impl>()) {
  impl_->paths = list_shards(pattern);
  for (const auto& p : impl_->paths) {
    impl_->sizes.push_back(read_shard_header(p).n_tokens);
    impl_->total += impl_->sizes.back();
  }
  impl_->open(0);
}

TokenStream::~TokenStream() = default;
TokenStream::TokenStream(TokenStream&&) noexcept = default;
TokenStream& TokenStream::operator=(TokenStream&&) noexcept = default;

std::vector<uint16_t> TokenStream::next_span(int64_t n) {
  std::vector<uint16_t> out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  impl_->take(n, [&](const uint16_t* p, int64_t k) { out.insert(out.end(), p, p + k); });
  return out;
}

void TokenStream::next_span(int64_t n, int32_t* out) {
  impl_->take(n, [&](const uint16_t* p, int64_t k) {
    for (int64_t i = 0; i < k; ++i) out[i] = p[i];
    out += k;
  });
}

TokenStream::State TokenStream::state() const { return State{impl_->shard, impl_->pos}; }

void TokenStream::restore(const State& s) {
  const auto n_shards = static_cast<int64_t>(impl_->paths.size());
  PG_CHECK(s.shard >= 0 && s.shard < n_shards, "TokenStream::restore: shard index {} but {} has {} shards", s.shard,
           impl_->paths.front(), n_shards);
  const int64_t size = impl_->sizes[static_cast<size_t>(s.shard)];
  PG_CHECK(s.pos >= 0 && s.pos <= size, "TokenStream::restore: position {} is outside shard {} ({} tokens)", s.pos,
           impl_->paths[static_cast<size_t>(s.shard)], size);
  if (s.shard != impl_->shard) impl_->open(s.shard);
  impl_->pos = s.pos;
}

const std::vector<std::string>& TokenStream::shards() const { return impl_->paths; }
int64_t TokenStream::total_tokens() const { return impl_->total; }

// ------------------------------------------------------------------------------------------------

DistributedTokenLoader::DistributedTokenLoader(const std::string& pattern) : stream_(pattern) {}

SplitSizes split_sizes(int64_t global_tokens, int64_t seq_len, int world, int grad_accum) {
  PG_CHECK(world >= 1 && grad_accum >= 1 && seq_len >= 1, "next_batch: world {}, grad_accum {}, seq_len {} must be >= 1",
           world, grad_accum, seq_len);
  const int64_t parts = static_cast<int64_t>(world) * grad_accum;
  PG_CHECK(global_tokens > 0 && global_tokens % parts == 0,
           "next_batch: global_tokens {} is not divisible by world {} x grad_accum {}", global_tokens, world, grad_accum);
  const int64_t local = global_tokens / parts;
  PG_CHECK(local % seq_len == 0, "next_batch: {} tokens per rank and micro-step is not a multiple of seq_len {}", local,
           seq_len);
  return {local, local / seq_len};
}

namespace {

Batch make_batch(const int32_t* span, const SplitSizes& s, int64_t seq_len) {
  Batch b;
  b.rows = s.rows;
  b.seq_len = seq_len;
  b.x.assign(span, span + s.local_tokens);
  b.y.assign(span + 1, span + 1 + s.local_tokens);
  return b;
}

}  // namespace

Batch DistributedTokenLoader::next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum) {
  const SplitSizes s = split_sizes(global_tokens, seq_len, world, grad_accum);
  PG_CHECK(rank >= 0 && rank < world, "next_batch: rank {} outside world {}", rank, world);
  const int64_t span = s.local_tokens + 1;
  // Every rank consumes the whole chunk so all ranks' streams stay in lock-step; only our span is kept.
  std::vector<int32_t> chunk(static_cast<size_t>(span * world));
  stream_.next_span(span * world, chunk.data());
  return make_batch(chunk.data() + rank * span, s, seq_len);
}

std::vector<Batch> DistributedTokenLoader::next_batch_all_ranks(int64_t global_tokens, int64_t seq_len, int world,
                                                                int grad_accum) {
  const SplitSizes s = split_sizes(global_tokens, seq_len, world, grad_accum);
  const int64_t span = s.local_tokens + 1;
  std::vector<int32_t> chunk(static_cast<size_t>(span * world));
  stream_.next_span(span * world, chunk.data());
  std::vector<Batch> out;
  for (int r = 0; r < world; ++r) out.push_back(make_batch(chunk.data() + r * span, s, seq_len));
  return out;
}

std::vector<uint16_t> load_val_tokens(const std::string& pattern, int64_t seq_len) {
  PG_CHECK(seq_len >= 1, "load_val_tokens: seq_len {} must be >= 1", seq_len);
  std::vector<uint16_t> all;
  for (const auto& path : list_shards(pattern)) {
    auto t = read_shard(path);
    all.insert(all.end(), t.begin(), t.end());
  }
  const int64_t n = static_cast<int64_t>(all.size());
  PG_CHECK(n >= seq_len + 1, "validation shards {} hold {} tokens, fewer than seq_len + 1 = {}", pattern, n,
           seq_len + 1);
  const int64_t usable = ((n - 1) / seq_len) * seq_len;
  all.resize(static_cast<size_t>(usable + 1));
  return all;
}

}  // namespace pgolf::data
