#pragma once
// The legality audit (TECHNIQUES.md §8.2 conditions 1-3, `pgolf eval --audit`). The scorer is run
// as it scores for real, capturing the full distribution p_t(.) at sampled target positions t:
//   normalised:  sum_k p_t(k) = 1 (condition 2);
//   consistent:  the NLL added to the total at t is -log p_t(x_t) (the audited distribution is the
//                one that scored, not a side computation);
//   causal:      p_t is unchanged when every token at positions >= t is replaced (condition 1; with
//                TTT also condition 3: nothing scored at t may come from training on x_t or later).
#include <cstdint>
#include <string>
#include <vector>

#include "eval/scorer.h"

namespace pgolf::eval {

struct AuditOptions {
  int samples = 8;          // sampled positions (plus the first and last target, always)
  uint64_t seed = 1234;
  double tolerance = 1e-4;  // max |log p - log p'| (f32 CPU; use ~2e-2 for bf16 on GPU)
  double sum_tolerance = 1e-3;
};

struct AuditReport {
  bool passed = true;
  int positions = 0;             // positions checked
  double max_sum_error = 0;      // max |sum_k p_t(k) - 1|
  double max_consistency = 0;    // max |scored NLL - (-log p_t(x_t))|
  double max_causal_diff = 0;    // max over t, k of |log p_t(k) - log p'_t(k)|
  std::vector<std::string> failures;  // one line per failed check (first few)
  double seconds = 0;
};

// Audits `opt` (any mode, TTT included) on `tokens` (use a prefix: the scorer runs 1 + positions times).
AuditReport audit(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                  const EvalOptions& opt, const AuditOptions& aopt);

}  // namespace pgolf::eval
