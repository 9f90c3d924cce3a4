#pragma once
// The trainer's source of batches (config data.loader): the reference baseline's sequential stream
// (DistributedTokenLoader) or the records' shuffled windows (ShuffledSequenceLoader), behind one interface
// with one checkpointable state.
#include <cstdint>
#include <memory>
#include <string>

#include "data/loader.h"
#include "data/shuffled_loader.h"

namespace pgolf::data {

class TrainLoader {
 public:
  // kind: "sequential" | "shuffled" (anything else fails naming the value).
  TrainLoader(const std::string& kind, const std::string& pattern, int64_t seq_len, int rank, int world, uint64_t seed);

  Batch next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum);

  // Sequential: {shard, position} of the stream. Shuffled: {kShuffled, sequences drawn}.
  struct State {
    int64_t shard = 0;
    int64_t pos = 0;
  };
  static constexpr int64_t kShuffled = -1;
  State state() const;
  // Fails clearly when the state was saved by the other kind of loader.
  void restore(const State& s);

 private:
  std::string kind_;
  std::unique_ptr<DistributedTokenLoader> sequential_;
  std::unique_ptr<ShuffledSequenceLoader> shuffled_;
};

}  // namespace pgolf::data
