#pragma once
// Landing an artifact under a byte budget (issue 6 "budget mode"), and LQER on the worst tensors.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "artifact/format.h"
#include "artifact/writer.h"
#include "quant/prune.h"

namespace pgolf::artifact {

struct BudgetResult {
  bool reached = false;
  quant::PruneResult prune;   // pruned = 0 when the first serialization already fit
  WriteReport report;         // of `bytes`
  std::vector<uint8_t> bytes; // the final serialized artifact
};

// Serializes with the full solver; if the file exceeds `max_file_bytes`, pins the solver's choices
// and binary-searches selective ±1 pruning over every int-row tensor (§7.11), then serializes once
// more with the full solver (never larger than the pinned size). `a` is modified in place.
// Counted-byte budgets: pass limit − code bytes.
BudgetResult fit_to_budget(Artifact& a, const SolverOptions& opt, uint64_t max_file_bytes);

// LQER (§7.10) on the k int-row tensors with the largest ‖W − Ŵ‖_F, given the f32 originals by
// name (tensors without an original are skipped). Returns the names corrected, worst first.
std::vector<std::string> add_lqer_to_worst(Artifact& a, const std::map<std::string, std::vector<float>>& originals,
                                           int k, int rank, int group_size);

}  // namespace pgolf::artifact
