#include "data/shuffled_loader.h"

#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"

namespace pgolf::data {

namespace {

// Stream tags, so the phase, the permutation and the shard choices never share Philox counters.
constexpr uint64_t kPhaseTag = 1, kPermTag = 2, kChoiceTag = 3;

uint64_t mix(uint64_t a, uint64_t b) {  // splitmix64 of a combination: well-spread Philox keys
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform integer in [0, n) from 64 random bits (multiply-shift; the bias is below 2^-32 for n < 2^32).
uint64_t below(uint64_t n, const rng::U4& r) {
  const uint64_t v = (static_cast<uint64_t>(r.x) << 32) | r.y;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(v) * n) >> 64);
}

}  // namespace

struct ShuffledSequenceLoader::Impl {
  // One shard as this rank sees it: its windows at positions offset, offset + stride, … of the epoch's
  // permutation (stride 1 when the rank owns the shard alone).
  struct Unit {
    int64_t shard = 0;
    int64_t offset = 0, stride = 1;
    MappedShard map;
    std::vector<int64_t> starts;  // this epoch's window starts, in the order they are served
    int64_t next = 0;
    int64_t remaining() const { return static_cast<int64_t>(starts.size()) - next; }
  };

  std::string pattern;
  int64_t T = 0;
  int rank = 0, world = 1;
  uint64_t seed = 0;
  std::vector<std::string> paths;
  std::vector<Unit> units;
  int64_t epoch = 0;
  int64_t drawn = 0;

  void start_epoch(int64_t e) {
    epoch = e;
    for (Unit& u : units) {
      const int64_t n = u.map.size();
      // Shared by every rank reading this shard: the key depends on the shard and the epoch, not the rank.
      const uint64_t key = mix(mix(seed, static_cast<uint64_t>(u.shard)), static_cast<uint64_t>(e));
      const int64_t phase = static_cast<int64_t>(below(static_cast<uint64_t>(T), rng::bits(mix(key, kPhaseTag), 0)));
      const int64_t windows = n > phase ? (n - phase - 1) / T : 0;
      std::vector<int64_t> perm(static_cast<size_t>(windows));
      for (int64_t w = 0; w < windows; ++w) perm[static_cast<size_t>(w)] = w;
      const uint64_t perm_key = mix(key, kPermTag);
      for (int64_t i = windows - 1; i > 0; --i) {  // Fisher-Yates
        const auto j = static_cast<int64_t>(below(static_cast<uint64_t>(i + 1), rng::bits(perm_key, static_cast<uint64_t>(i))));
        std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
      }
      u.starts.clear();
      for (int64_t i = u.offset; i < windows; i += u.stride) u.starts.push_back(phase + perm[static_cast<size_t>(i)] * T);
      u.next = 0;
    }
  }

  // The start of the next window and the unit it comes from.
  std::pair<const Unit*, int64_t> draw() {
    int64_t total = 0;
    for (const Unit& u : units) total += u.remaining();
    if (total == 0) {
      start_epoch(epoch + 1);
      for (const Unit& u : units) total += u.remaining();
    }
    const auto pick = static_cast<int64_t>(
        below(static_cast<uint64_t>(total),
              rng::bits(mix(mix(seed, kChoiceTag), static_cast<uint64_t>(rank)), static_cast<uint64_t>(drawn))));
    ++drawn;
    int64_t acc = 0;
    for (Unit& u : units) {
      acc += u.remaining();
      if (pick < acc) return {&u, u.starts[static_cast<size_t>(u.next++)]};
    }
    PG_FAIL("ShuffledSequenceLoader: internal error drawing from {}", pattern);
  }

  void reset() {
    drawn = 0;
    start_epoch(0);
  }
};

ShuffledSequenceLoader::ShuffledSequenceLoader(const std::string& pattern, int64_t seq_len, int rank, int world,
                                               uint64_t seed)
    : impl_(std::make_unique<Impl>()) {
  PG_CHECK(seq_len >= 1, "ShuffledSequenceLoader: seq_len {} must be >= 1", seq_len);
  PG_CHECK(world >= 1 && rank >= 0 && rank < world, "ShuffledSequenceLoader: rank {} outside world {}", rank, world);
  Impl& m = *impl_;
  m.pattern = pattern;
  m.T = seq_len;
  m.rank = rank;
  m.world = world;
  m.seed = seed;
  m.paths = list_shards(pattern);
  const auto n_shards = static_cast<int64_t>(m.paths.size());
  const bool shared = n_shards < world;  // too few shards to give each rank its own
  for (int64_t s = shared ? 0 : rank; s < n_shards; s += shared ? 1 : world) {
    Impl::Unit u;
    u.shard = s;
    u.offset = shared ? rank : 0;
    u.stride = shared ? world : 1;
    u.map = MappedShard(read_shard_header(m.paths[static_cast<size_t>(s)]), MappedShard::Access::Random);
    m.units.push_back(std::move(u));
  }
  m.reset();
  int64_t total = 0;
  for (const auto& u : m.units) total += u.remaining();
  PG_CHECK(total > 0,
           "ShuffledSequenceLoader: rank {} of {} gets no window of {} + 1 tokens from {} ({} shard(s)): the shards are "
           "too small for this sequence length",
           rank, world, seq_len, pattern, n_shards);
}

ShuffledSequenceLoader::~ShuffledSequenceLoader() = default;
ShuffledSequenceLoader::ShuffledSequenceLoader(ShuffledSequenceLoader&&) noexcept = default;

Batch ShuffledSequenceLoader::next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum) {
  Impl& m = *impl_;
  PG_CHECK(seq_len == m.T && rank == m.rank && world == m.world,
           "ShuffledSequenceLoader: built for seq_len {}, rank {} of {}; asked for seq_len {}, rank {} of {}", m.T, m.rank,
           m.world, seq_len, rank, world);
  const SplitSizes s = split_sizes(global_tokens, seq_len, world, grad_accum);
  Batch b;
  b.rows = s.rows;
  b.seq_len = seq_len;
  b.x.resize(static_cast<size_t>(s.local_tokens));
  b.y.resize(static_cast<size_t>(s.local_tokens));
  for (int64_t r = 0; r < s.rows; ++r) {
    auto [unit, start] = m.draw();
    const uint16_t* w = unit->map.tokens() + start;
    int32_t* x = b.x.data() + r * seq_len;
    int32_t* y = b.y.data() + r * seq_len;
    for (int64_t t = 0; t < seq_len; ++t) {
      x[t] = w[t];
      y[t] = w[t + 1];
    }
  }
  return b;
}

int64_t ShuffledSequenceLoader::sequences_drawn() const { return impl_->drawn; }
int64_t ShuffledSequenceLoader::epoch() const { return impl_->epoch; }

void ShuffledSequenceLoader::restore(int64_t drawn) {
  PG_CHECK(drawn >= 0, "ShuffledSequenceLoader::restore: negative sequence count {}", drawn);
  impl_->reset();
  for (int64_t i = 0; i < drawn; ++i) impl_->draw();
}

}  // namespace pgolf::data
