#pragma once
// Score-first chunked test-time training (TECHNIQUES.md §8.3): plain SGD with momentum over every
// parameter of the model, on target positions that have ALREADY been scored. The scorer
// (scorer.h) decides when it runs; this file only knows how to take SGD steps on a token range.
#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "model/gpt.h"

namespace pgolf::eval {

struct TttOptions {
  bool enabled = false;
  int64_t chunk_tokens = 32768;  // targets per chunk; a window belongs to the chunk of its first scored target
  float lr = 0.005f;             // lr_c = lr * (1 + cos(pi c / (C - 1))) / 2 over the C chunks
  float momentum = 0.9f;
  int epochs = 3;
  float grad_clip = 1.0f;        // global L2 norm; <= 0 disables
  int64_t batch_seqs = 32;       // sequences per optimizer step
  int64_t seq_len = 0;           // training row length; 0 = the eval context
};

// The lr of chunk c of C (cosine from lr to 0; a single chunk gets lr).
float ttt_chunk_lr(const TttOptions& o, int64_t c, int64_t num_chunks);

class SgdAdapter {
 public:
  SgdAdapter(model::GPT& model, const TttOptions& opt, int64_t seq_len);
  // Bytes of arena one training step needs (a dry run of forward_backward).
  size_t plan_bytes();
  // `epochs` passes of SGD over targets [first_target, end_target) of `tokens` (all already scored):
  // rows of seq_len whose inputs start at first_target - 1; the last row is padded with ignored targets.
  void train(const uint16_t* tokens, int64_t first_target, int64_t end_target, float lr, Arena& arena);
  int64_t steps() const { return steps_; }

 private:
  void step(float lr);  // clip, momentum, update, refresh compute copies

  model::GPT& model_;
  TttOptions opt_;
  int64_t seq_len_;
  std::vector<Tensor> momentum_;  // one f32 buffer per parameter
  Tensor loss_sum_, norm_sq_;     // (1) f32 on the model's device
  Tensor ids_, targets_;          // (batch_seqs, seq_len) i32 on the device
  std::vector<int32_t> host_ids_, host_targets_;
  int64_t steps_ = 0;
};

// A copy of every parameter value, to give the caller its model back unchanged after TTT.
class WeightSnapshot {
 public:
  explicit WeightSnapshot(const model::GPT& model);
  void restore(model::GPT& model) const;

 private:
  std::vector<Tensor> values_;
};

}  // namespace pgolf::eval
