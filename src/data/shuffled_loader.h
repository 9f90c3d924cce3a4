#pragma once
// ShuffledSequenceLoader (TECHNIQUES.md §2.5; the records of 2026-04-05 … 04-09): training sequences are
// T-token windows drawn in random order instead of a sequential stream, so every batch mixes the whole corpus
// (a corpus stored source by source — the benchmark shard holds web text, then news, then Wikipedia — is
// otherwise met in long same-source runs, and the last steps of a warm-down see only one source).
//
// Per epoch and shard: a random phase p in [0, T) and a random permutation of the shard's windows
// [p + wT, p + wT + T + 1) (x = the first T tokens, y = the last T). Rank r owns shards r::world; each sequence
// picks one of the rank's shards with probability proportional to its windows not yet used this epoch; when
// all are used a new epoch starts with new phases and permutations. With fewer shards than ranks every rank
// owns every shard and takes the windows r::world of a permutation shared by all ranks, so no window repeats
// within an epoch either way.
//
// Everything is a pure function of (seed, rank, world, number of sequences drawn): the state saved in a
// checkpoint is that number, and restore() replays the draws (a few microseconds per sequence).
#include <cstdint>
#include <memory>
#include <string>

#include "data/loader.h"

namespace pgolf::data {

class ShuffledSequenceLoader {
 public:
  // Validates every shard header; fails naming the shard when none of the rank's shards holds a window.
  ShuffledSequenceLoader(const std::string& pattern, int64_t seq_len, int rank, int world, uint64_t seed);
  ~ShuffledSequenceLoader();
  ShuffledSequenceLoader(ShuffledSequenceLoader&&) noexcept;

  // This rank's batch for one micro-step: local_tokens / seq_len windows (same size rules as
  // DistributedTokenLoader::next_batch). rank, world and seq_len must be the constructor's.
  Batch next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum);

  int64_t sequences_drawn() const;
  int64_t epoch() const;
  // Back to the state after `drawn` sequences (replayed from the start).
  void restore(int64_t drawn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgolf::data
