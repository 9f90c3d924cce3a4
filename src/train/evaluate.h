#pragma once
// Training-time validation (TECHNIQUES.md §3.3, non-overlapping): the val stream cut into T-token
// rows, every target scored once, val_loss and exact val_bpb through data::BpbAccumulator.
#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "data/bpb.h"
#include "model/gpt.h"

namespace pgolf::train {

class Validator {
 public:
  // tokens: the trimmed val stream ((n - 1) % T == 0). rows_per_batch: rows per forward pass.
  Validator(std::vector<uint16_t> tokens, const data::ByteLuts& luts, int64_t seq_len, int64_t rows_per_batch,
            Device dev);
  // Scores the whole stream with `model` (temporaries from `arena`).
  data::BpbAccumulator run(model::GPT& model, Arena& arena);
  int64_t rows() const { return rows_; }
  int64_t scored_bytes() const { return bytes_; }
  const std::vector<uint16_t>& tokens() const { return tokens_; }

 private:
  std::vector<uint16_t> tokens_;
  int64_t seq_len_, rows_per_batch_, rows_, bytes_;
  Tensor ids_, targets_, losses_;  // device buffers (rows_per_batch, T)
  std::vector<int32_t> host_ids_, host_targets_;
};

}  // namespace pgolf::train
