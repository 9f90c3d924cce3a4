#pragma once
// Score-first chunked test-time training (TECHNIQUES.md §8.3): plain SGD with momentum over every
// parameter of the model, on target positions that have ALREADY been scored. The scorer
// (scorer.h) decides when it runs; this file only knows how to take SGD steps on a token range.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "model/gpt.h"

namespace pgolf::dist {
class Communicator;
}

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
  // Per-parameter lr multipliers by name (0 freezes a tensor); others get 1 (hash_embed.h uses this).
  std::vector<std::pair<std::string, float>> lr_mult;
};

// The lr of chunk c of C (cosine from lr to 0; a single chunk gets lr).
float ttt_chunk_lr(const TttOptions& o, int64_t c, int64_t num_chunks);

// Phased global TTT (TECHNIQUES.md §8.4, PR #1610/#1626): scoring pauses when the first
// floor(prefix_docs (i+1) / phases) documents are fully scored (i = 0..phases-1) and runs SGD on all
// weights over the whole already-scored prefix (chunks of chunk_tokens targets, cosine lr across
// them, `epochs` passes); later phases train on the cumulative prefix. Combines with chunk TTT.
struct PhasedTttOptions {
  bool enabled = false;
  int64_t prefix_docs = 2500;
  int phases = 3;
  int64_t chunk_tokens = 32768;
  float lr = 0.001f;
  float momentum = 0.9f;
  int epochs = 1;
  float grad_clip = 1.0f;
  int64_t batch_seqs = 32;
  int64_t seq_len = 0;  // 0 = the eval context
  // The SGD settings as TttOptions (what SgdAdapter takes).
  TttOptions as_ttt() const {
    TttOptions t;
    t.enabled = enabled;
    t.chunk_tokens = chunk_tokens;
    t.lr = lr;
    t.momentum = momentum;
    t.epochs = epochs;
    t.grad_clip = grad_clip;
    t.batch_seqs = batch_seqs;
    t.seq_len = seq_len;
    return t;
  }
};

// Exclusive target ends of the phases: after document k = floor(prefix_docs (i+1) / phases) - 1 is
// fully scored, i.e. its last target (the next document's BOS) included. Documents start at 0 and at
// every BOS after it; boundaries at or past the stream end are dropped.
std::vector<int64_t> phase_boundaries(const PhasedTttOptions& o, const uint16_t* tokens, int64_t n, int bos_id);

class SgdAdapter {
 public:
  // With `comm` (world > 1) every SGD step is data parallel: each rank runs forward/backward on its contiguous
  // share of the step's rows (loss still scaled by 1 / the step's valid targets over all ranks), the gradients
  // are summed with comm->all_reduce_sum over ParamTable::grad_flat, and every rank applies the same update.
  // Every rank must call train() with the same arguments (a collective per step).
  SgdAdapter(model::GPT& model, const TttOptions& opt, int64_t seq_len, dist::Communicator* comm = nullptr);
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
  dist::Communicator* comm_ = nullptr;  // null or world 1: the single-rank step
  std::vector<Tensor> momentum_;  // one f32 buffer per parameter
  std::vector<float> lr_scale_;   // per parameter (TttOptions::lr_mult)
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
