#include "data/train_loader.h"

#include "core/error.h"

namespace pgolf::data {

TrainLoader::TrainLoader(const std::string& kind, const std::string& pattern, int64_t seq_len, int rank, int world,
                         uint64_t seed, int bos)
    : kind_(kind) {
  if (kind == "sequential")
    sequential_ = std::make_unique<DistributedTokenLoader>(pattern);
  else if (kind == "shuffled")
    shuffled_ = std::make_unique<ShuffledSequenceLoader>(pattern, seq_len, rank, world, seed);
  else if (kind == "document_packing")
    packing_ = std::make_unique<DocumentPackingLoader>(pattern, seq_len, bos);
  else
    PG_FAIL("data.loader '{}' is not one of sequential, shuffled, document_packing", kind);
}

Batch TrainLoader::next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum) {
  if (packing_) return packing_->next_batch(global_tokens, seq_len, rank, world, grad_accum);
  return sequential_ ? sequential_->next_batch(global_tokens, seq_len, rank, world, grad_accum)
                     : shuffled_->next_batch(global_tokens, seq_len, rank, world, grad_accum);
}

TrainLoader::State TrainLoader::state() const {
  if (shuffled_) return {kShuffled, shuffled_->sequences_drawn()};
  const auto s = packing_ ? packing_->state() : sequential_->state();
  return {s.shard, s.pos};
}

void TrainLoader::restore(const State& s) {
  if (shuffled_) {
    PG_CHECK(s.shard == kShuffled,
             "the checkpoint's data position was saved by the sequential loader, but data.loader is 'shuffled'");
    shuffled_->restore(s.pos);
  } else {
    // Sequential and document packing read the same stream: either's position resumes the other.
    PG_CHECK(s.shard != kShuffled,
             "the checkpoint's data position was saved by the shuffled loader, but data.loader is '{}'", kind_);
    if (packing_)
      packing_->restore({s.shard, s.pos});
    else
      sequential_->restore({s.shard, s.pos});
  }
}

}  // namespace pgolf::data
