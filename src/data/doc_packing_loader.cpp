#include "data/doc_packing_loader.h"

#include <algorithm>

#include "core/error.h"
#include "data/shard.h"

namespace pgolf::data {

namespace {

// How far into the first shard the constructor looks for a BOS.
constexpr int64_t kBosProbeTokens = int64_t{1} << 20;

}  // namespace

DocumentPackingLoader::DocumentPackingLoader(const std::string& pattern, int64_t seq_len, int bos)
    : stream_(pattern), seq_len_(seq_len), bos_(bos) {
  PG_CHECK(seq_len >= 1, "document packing: seq_len {} must be >= 1", seq_len);
  PG_CHECK(bos >= 0 && bos <= 65535, "document packing: BOS id {} is not a token id (0..65535; model.bos_id)", bos);
  const std::string& first = stream_.stream().shards().front();
  const ShardInfo info = read_shard_header(first);
  if (info.n_tokens > 0) {
    MappedShard m(info, MappedShard::Access::Sequential);
    const int64_t n = std::min(m.size(), kBosProbeTokens);
    const uint16_t* t = m.tokens();
    PG_CHECK(std::find(t, t + n, static_cast<uint16_t>(bos)) != t + n,
             "document packing: no BOS (id {}) in the first {} tokens of {}: documents are found by BOS, so "
             "model.bos_id or the corpus is wrong (use data.loader = \"sequential\" for a corpus without BOS)",
             bos, n, first);
  }
}

Batch DocumentPackingLoader::next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum) {
  PG_CHECK(seq_len == seq_len_, "document packing: next_batch with seq_len {} but the loader cuts at {}", seq_len,
           seq_len_);
  // The sequential loader's span, as one row: the tokens are identical, only the layout changes.
  Batch b = stream_.next_batch(global_tokens, seq_len, rank, world, grad_accum);
  b.seq_len = b.rows * b.seq_len;
  b.rows = 1;
  return b;
}

std::vector<int64_t> segment_starts(const int32_t* x, int64_t n, int bos, int64_t max_len) {
  PG_CHECK(n >= 0 && max_len >= 0, "segment_starts: n {} and max_len {} must be >= 0", n, max_len);
  std::vector<int64_t> out;
  int64_t doc = 0;  // start of the current document (0: the span's first, partial one)
  for (int64_t t = 0; t < n; ++t) {
    if (x[t] == bos) doc = t;
    if (t == 0 || t == doc || (max_len > 0 && (t - doc) % max_len == 0)) out.push_back(t);
  }
  return out;
}

}  // namespace pgolf::data
