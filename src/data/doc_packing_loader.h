#pragma once
// DocumentPackingLoader (TECHNIQUES.md §2.5, PR #1530; the records R:2026-04-10 … top): each rank takes one
// contiguous span of local_tokens + 1 tokens per micro-step and trains on it as ONE flat sequence
// (x = span[:-1], y = span[1:], a (1, local_tokens) batch) instead of local_tokens / seq_len rows. Attention is
// document-isolated (§5.15): segments start at every BOS and documents longer than seq_len are cut into seq_len
// segments counted from their BOS — the records' cu_seqlens. The model derives those boundaries from the ids
// itself (ops::doc_starts with max_len = seq_len, set by the trainer through GPT::set_doc_segment_len), so a
// batch carries tokens only; segment_starts() below is the same rule as a list (the records' cu_seqlens without
// the padding), for tests and diagnostics.
//
// The spans come from the same stream as the sequential loader (DistributedTokenLoader: rank r takes span r of a
// chunk of world x (local_tokens + 1) tokens, every rank consumes the whole chunk), so the tokens a step sees are
// the sequential loader's; only their layout and the attention boundaries differ. Its checkpoint state is the
// stream position, interchangeable with the sequential loader's.
//
// Not reproduced: the records pad cu_seqlens to a multiple of 64 entries (a bound on compiled shapes; the dense
// per-position doc_start needs none) and prefetch two batches on a background thread (a speed item).
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"

namespace pgolf::data {

class DocumentPackingLoader {
 public:
  // Validates every shard header; fails when bos is not a token id (0..65535), seq_len < 1, or the first shard
  // holds tokens but no BOS in its first million (documents are found by BOS: wrong bos_id or corpus?).
  DocumentPackingLoader(const std::string& pattern, int64_t seq_len, int bos);

  // This rank's flat sequence for one micro-step: rows = 1, seq_len = local_tokens (the sizes must divide as for
  // the other loaders: global / (world x grad_accum) a multiple of seq_len). seq_len must be the constructor's.
  Batch next_batch(int64_t global_tokens, int64_t seq_len, int rank, int world, int grad_accum);

  using State = DistributedTokenLoader::State;
  State state() const { return stream_.state(); }
  void restore(const State& s) { stream_.restore(s); }

  int64_t seq_len() const { return seq_len_; }
  int bos() const { return bos_; }

 private:
  DistributedTokenLoader stream_;
  int64_t seq_len_;
  int bos_;
};

// Segment starts of a flat sequence x[0..n) (the records' cu_seqlens without the final n): 0, every BOS
// position, and every max_len tokens after a segment's document start (max_len = 0: BOS only). Ascending.
std::vector<int64_t> segment_starts(const int32_t* x, int64_t n, int bos, int64_t max_len);

}  // namespace pgolf::data
