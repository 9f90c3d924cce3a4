#pragma once
// The trainer's source of batches (config data.loader): the reference baseline's sequential stream
// (DistributedTokenLoader), the records' shuffled windows (ShuffledSequenceLoader) or their document packing
// (DocumentPackingLoader: one flat row per micro-step), behind one interface with one checkpointable state.
#include <cstdint>
#include <memory>
#include <string>

#include "data/doc_packing_loader.h"
#include "data/loader.h"
#include "data/shuffled_loader.h"

namespace pgolf::data {

class TrainLoader {
 public:
  // kind: "sequential" | "shuffled" | "document_packing" (anything else fails naming the value). bos: the
  // document marker document_packing splits at (model.bos_id; the other kinds ignore it).
  TrainLoader(const std::string& kind, const std::string& pattern, int64_t seq_len, int rank, int world, uint64_t seed,
              int bos = 1);

  Batch next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum);

  // Sequential and document packing (the same stream): {shard, position}. Shuffled: {kShuffled, sequences drawn}.
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
  std::unique_ptr<DocumentPackingLoader> packing_;
};

}  // namespace pgolf::data
