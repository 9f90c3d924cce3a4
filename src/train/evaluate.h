#pragma once
// Training-time validation (TECHNIQUES.md §3.3, non-overlapping): the val stream cut into T-token
// rows, every target scored once, val_loss and exact val_bpb through data::BpbAccumulator.
// With several data-parallel ranks the batches are dealt round-robin over the ranks (batch b to rank b mod world);
// each rank scores its batches, one all_gather of the per-batch loss sums (doubles, moved as bytes) gives every
// rank all of them, and every rank adds them up in batch order: the same additions in the same order as one rank,
// so val_loss / val_bpb are bit-identical to the single-rank run for the same rows_per_batch.
#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "data/bpb.h"
#include "model/gpt.h"

namespace pgolf::dist {
class Communicator;
}

namespace pgolf::train {

class Validator {
 public:
  // tokens: the trimmed val stream ((n - 1) % T == 0). rows_per_batch: rows per forward pass.
  Validator(std::vector<uint16_t> tokens, const data::ByteLuts& luts, int64_t seq_len, int64_t rows_per_batch,
            Device dev);
  // Scores the whole stream with `model` (temporaries from `arena`). With `comm` (every rank must call, with the
  // same model), each rank scores only its share of the batches; the result is the same on every rank.
  data::BpbAccumulator run(model::GPT& model, Arena& arena, dist::Communicator* comm = nullptr);
  // Batches this rank scored in the last run() (all of them on one rank).
  int64_t batches_scored() const { return scored_; }
  int64_t rows() const { return rows_; }
  int64_t scored_bytes() const { return bytes_; }
  const std::vector<uint16_t>& tokens() const { return tokens_; }

 private:
  std::vector<uint16_t> tokens_;
  // Loss sum of one batch of rows_per_batch rows starting at row r0.
  double score_batch(model::GPT& model, Arena& arena, int64_t r0);

  int64_t seq_len_, rows_per_batch_, rows_, bytes_, scored_ = 0;
  Tensor ids_, targets_, losses_;  // device buffers (rows_per_batch, T)
  std::vector<int32_t> host_ids_, host_targets_;
};

}  // namespace pgolf::train
