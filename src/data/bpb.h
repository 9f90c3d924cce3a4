#pragma once
// Exact bits-per-byte accounting (TECHNIQUES.md §3). ONE implementation shared by every evaluation
// path: training-time validation, sliding window, document-isolated and TTT scorers.
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::data {

// Per-token byte tables built from a SentencePiece model (§3.1), sized max(sp_vocab, vocab_size).
struct ByteLuts {
  std::vector<int32_t> base_bytes;          // 0 for boundary ids, 1 for <0xNN>, UTF-8 length of piece minus one leading ▁
  std::vector<uint8_t> has_leading_space;   // normal piece that starts with ▁ (U+2581)
  std::vector<uint8_t> is_boundary;         // control / unknown / unused pieces, and ids >= sp vocab
  int sp_vocab = 0;

  // Bytes charged when `target` follows `prev` (§3.2).
  int bytes(int prev, int target) const {
    return base_bytes[static_cast<size_t>(target)] +
           ((has_leading_space[static_cast<size_t>(target)] && !is_boundary[static_cast<size_t>(prev)]) ? 1 : 0);
  }
};

ByteLuts build_byte_luts(const std::string& sp_model_path, int vocab_size);

// Running totals for val_loss / val_bpb. Sums in double; merge() combines ranks or chunks.
struct BpbAccumulator {
  double nll_nats = 0;  // sum of -log p(target) in nats
  int64_t tokens = 0;   // scored targets
  int64_t bytes = 0;    // scored bytes

  void add(double nll, int64_t n_tokens, int64_t n_bytes) {
    nll_nats += nll;
    tokens += n_tokens;
    bytes += n_bytes;
  }
  void merge(const BpbAccumulator& o) { add(o.nll_nats, o.tokens, o.bytes); }
  double loss() const { return tokens ? nll_nats / static_cast<double>(tokens) : 0.0; }
  double bpb() const;  // nll / (ln 2 * bytes)
};

// Scored bytes of targets tokens[first..last) (each with its predecessor), i.e. positions t in
// [first, last), 1 <= first. The building block every scorer calls.
int64_t count_scored_bytes(const ByteLuts& luts, const uint16_t* tokens, int64_t first, int64_t last);

}  // namespace pgolf::data
