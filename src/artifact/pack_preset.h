#pragma once
// Named quantization / packing presets for `pgolf pack --preset NAME`: what each record (or seed)
// stores, from TECHNIQUES.md §7 (numbers there). Every preset lands on the byte budget through
// fit_to_budget (selective ±1 pruning, §7.11) whatever the quantizer.
//
//   top-2026-04-27 (alias top): int6 GPTQ SDClip k 13.0 attention / 11.5 MLP, int7 GPTQ k 14 tied
//                    embedding, int8 gates, LQER top-3 rank 4 (§7.1, §7.7, §7.10); no clip search.
//   rec-2026-04-09, pr1658, pr1555: int6 GPTQ SDClip k 12.85 on every block matrix, int8 GPTQ k 20
//                    embedding (§7.7, §7.8: int7 k 15 only from R:2026-04-14), brotli-11; no search
//                    ("one GPTQ run per matrix (no search)", §7.7).
//   pr1072:          full GPTQ int6 with the GPTQ-lite per-matrix percentile clip search selected by
//                    Hessian-weighted error (§7.5 "or GPTQ-lite percentile search"), int8 embedding
//                    (RTN + the same search), lzma-9 (§7.12).
//   pr915:           GPTQ-lite (§7.4): RTN int6 with the best of the five percentile rules per
//                    matrix (whole-matrix MSE), int8 embedding, lzma (§7.12).
//   pr1672:          seed #1672 (GDN hybrid, table (a)): full GPTQ int6 with the eigendecomposition
//                    Hessian repair (§7.5, §7.6; always on in quant/gptq) and the percentile clip
//                    search by Hessian-weighted error on every matrix — attention, MLP and the
//                    GatedDeltaNet projections, W_a/W_b (role Gate) included —, GPTQ int8 tied
//                    embedding (the spec names no embedding format for this seed), brotli-11 only,
//                    size-descending tensor order only (§7.12). The seed calibrated on AR
//                    self-generated text (§7.5); pgolf pack has no such source and calibrates on
//                    training batches like every preset.
//   baseline:        int8 RTN with the baseline's 99.99984th-percentile clip everywhere, zlib-9.
// Compressors: each preset lists its record's compressor first; the solver keeps the smallest.
// Orders: empty = the solver tries every LayoutOrder; a preset may pin its record's.
#include <string>
#include <string_view>
#include <vector>

#include "artifact/compress.h"
#include "artifact/writer.h"
#include "quant/policy.h"

namespace pgolf::artifact {

struct PackPreset {
  std::string name;
  quant::QuantPolicy policy;
  bool lqer = false;
  std::vector<Compressor> compressors;  // empty: the solver's default list
  std::vector<LayoutOrder> orders;      // empty: the solver's default list (all orders)
  std::string note;                     // where pgolf departs from the record; printed by pgolf pack
};

// The solver options of `preset`: SolverOptions defaults with the preset's compressor and order lists.
SolverOptions preset_solver(const PackPreset& preset);

inline constexpr std::string_view kDefaultPackPreset = "top-2026-04-27";

// Throws naming the known presets for an unknown name.
PackPreset pack_preset(std::string_view name);
std::vector<std::string> pack_preset_names();

}  // namespace pgolf::artifact
