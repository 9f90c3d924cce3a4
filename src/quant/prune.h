#pragma once
// Selective ±1 pruning (TECHNIQUES.md §7.11): among all codes with |q| = 1, zero the cheapest ones
// (error proxy s_row², the squared error the zeroing adds) until the compressed size lands on a
// byte budget. The count is found by binary search over a caller-supplied size function.
#include <cstdint>
#include <functional>
#include <vector>

#include "quant/quantize.h"

namespace pgolf::quant {

struct PruneCandidate {
  uint32_t matrix = 0;  // index into the matrices given
  uint64_t index = 0;   // element index inside that matrix's codes
  float cost = 0;       // s_row²
  int8_t sign = 1;      // the code's original value (±1), to undo
};

// Every |q| = 1 code, cheapest first; ties keep (matrix, index) order so the result is deterministic.
std::vector<PruneCandidate> prune_candidates(const std::vector<QuantizedMatrix*>& matrices);

// Zeroes candidates [0, n) and restores [n, size) to their original ±1.
void apply_prune(const std::vector<QuantizedMatrix*>& matrices, const std::vector<PruneCandidate>& candidates, size_t n);

struct PruneResult {
  bool reached = false;      // size(n) <= target for the chosen n
  size_t pruned = 0;         // n
  size_t candidates = 0;
  uint64_t bytes = 0;        // size at n (or with no pruning when unreachable)
  int evaluations = 0;       // calls of the size function
  double added_error = 0;    // Σ cost over the pruned entries
};

// Finds the smallest n with size_fn() <= target_bytes (size assumed non-increasing in n) and leaves
// the matrices pruned by it. When even pruning every candidate is not enough, restores the matrices
// and returns reached = false so the caller can lower bits or k instead.
PruneResult prune_to_budget(const std::vector<QuantizedMatrix*>& matrices, const std::function<uint64_t()>& size_fn,
                            uint64_t target_bytes);

}  // namespace pgolf::quant
