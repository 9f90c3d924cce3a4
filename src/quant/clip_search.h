#pragma once
// Clip search for the per-row int-N quantizers (TECHNIQUES.md §7.4, §7.5, §7.7).
//
// For one matrix W (rows, cols) the search quantizes W once per candidate set of per-row clip
// values (RTN, or GPTQ when a Hessian is given) and keeps, per matrix or per row, the candidate
// with the smallest Hessian-weighted reconstruction error  e_r H e_rᵀ  (e_r = row r of W − Q; with
// no Hessian H = I, i.e. plain squared error).
//
// Candidates:
//   - the base rule (the policy's clip: what "no search" would do) is always candidate 0, so the
//     search never returns a larger error than no search; ties keep the earlier candidate;
//   - percentile / row-max base rules (GPTQ-lite, §7.4): the five §7.4 rules, quantiles
//     {0.999, 0.9995, 0.9999, 0.99999, 1.0 = row max};
//   - SDClip base rules (§7.7): the base clips k·σ_row times each multiplier of the grid.
//
// GPTQ's error feedback runs along a row only (each row's trajectory depends on its own scale and
// the shared H), and tr(E H Eᵀ) = Σ_r e_r H e_rᵀ, so choosing a different candidate for each row
// gives exactly the result of GPTQ run with the chosen per-row scales: rows are spliced, not re-run.
//
// Rate constraint (on by default): a smaller clip always lowers rounding error but spends more bits
// per weight (§7.7: bits ≈ 2.047 + log2(qmax/k)), which an error-only search would take every time.
// With `rate_constrained`, each code costs −log2 p(code) under the base candidate's code histogram
// (add-½ smoothed), and the chosen rows must not cost more in total than the base rows
// (× (1 + rate_slack)); per-row choice is a Lagrangian allocation (min Σ err + λ·bits, the smallest
// λ that meets the budget, found by bisection). So with SDClip the search moves bits between rows
// (where they reduce the Hessian-weighted error most) at an unchanged estimated size.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "quant/gptq.h"
#include "quant/quantize.h"

namespace pgolf::quant {

enum class ClipSearchMode : uint8_t {
  Off,     // no search: the base rule
  Matrix,  // one candidate for the whole matrix (§7.4: "the code picks one percentile per matrix")
  Row,     // one candidate per row
};
std::string_view clip_search_mode_name(ClipSearchMode m);
bool parse_clip_search_mode(std::string_view s, ClipSearchMode* out);  // off | matrix | row

struct ClipSearchOptions {
  ClipSearchMode mode = ClipSearchMode::Off;
  // Multipliers of the base clips for SDClip base rules; empty = kDefaultClipMultipliers. For
  // percentile / row-max base rules the §7.4 quantiles are used, plus these multipliers of the
  // base rule when given explicitly.
  std::vector<double> multipliers;
  bool rate_constrained = true;
  double rate_slack = 0.0;  // allowed relative increase of the code-cost proxy over the base
};

// SDClip multiplier grid: k spans 10 … 15 around the generic 12.85 in the records (§7.7:
// 10, 11.5, 12, 12.85, 13, 14, 15), i.e. ×0.78 … ×1.17; the grid covers that range.
inline const std::vector<double> kDefaultClipMultipliers{0.78, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.17};

struct ClipSearchOutcome {
  QuantizedMatrix q;
  std::vector<int> row_candidate;   // per row: index into `candidate_names` (0 = the base rule)
  std::vector<std::string> candidate_names;  // "base", "pct(0.999)", "x0.9", ...
  double base_error = 0;    // Σ_r e_r H e_rᵀ of the base rule (H = I without a Hessian)
  double error = 0;         // the same for the result (<= base_error)
  double base_cost_bits = 0, cost_bits = 0;  // code-cost proxy (bits) of base and result
  int rows_changed = 0;     // rows whose candidate is not the base
};

// `hessian` empty: RTN with plain squared error. Otherwise GPTQ with `gptq` (its .bits and .clip
// are the base; .min_scale applies to every candidate) and the Hessian-weighted error.
ClipSearchOutcome clip_search(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> hessian,
                              const GptqOptions& gptq, const ClipSearchOptions& opt);

// Per-row e_r H e_rᵀ (H = I when `hessian` is empty); exposed for tests.
std::vector<double> row_weighted_errors(std::span<const float> w, std::span<const float> deq, int64_t rows,
                                        int64_t cols, std::span<const double> hessian);

}  // namespace pgolf::quant
