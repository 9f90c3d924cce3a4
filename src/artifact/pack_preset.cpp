#include "artifact/pack_preset.h"

#include "core/error.h"

namespace pgolf::artifact {

namespace {

using quant::ClipRule;
using quant::ClipSearchMode;
using quant::QuantMethod;
using quant::RolePolicy;

// §7.4's GPTQ-lite: the percentile set against the row max, one choice per matrix, by error alone.
quant::ClipSearchOptions gptq_lite_search() {
  quant::ClipSearchOptions s;
  s.mode = ClipSearchMode::Matrix;
  s.rate_constrained = false;
  return s;
}

}  // namespace

std::vector<std::string> pack_preset_names() {
  return {"top-2026-04-27", "rec-2026-04-09", "pr1658", "pr1555", "pr1072", "pr915", "pr1672", "baseline"};
}

PackPreset pack_preset(std::string_view name) {
  PackPreset p;
  p.name = std::string(name);
  if (name == "top" || name == "top-2026-04-27") {
    p.name = "top-2026-04-27";
    p.lqer = true;  // the QuantPolicy defaults are the top record's
    p.compressors = {Compressor::Brotli11, Compressor::Lzma9Extreme, Compressor::Cm};
  } else if (name == "rec-2026-04-09" || name == "pr1658" || name == "pr1555") {
    p.policy.attn = RolePolicy{QuantMethod::Gptq, 6, ClipRule::sd(12.85)};
    p.policy.mlp = RolePolicy{QuantMethod::Gptq, 6, ClipRule::sd(12.85)};
    p.policy.embed = RolePolicy{QuantMethod::Gptq, 8, ClipRule::sd(20.0)};
    p.compressors = {Compressor::Brotli11, Compressor::Lzma9Extreme, Compressor::Cm};
  } else if (name == "pr1072") {
    p.policy.attn = RolePolicy{QuantMethod::Gptq, 6, ClipRule::row_max()};
    p.policy.mlp = RolePolicy{QuantMethod::Gptq, 6, ClipRule::row_max()};
    p.policy.embed = RolePolicy{QuantMethod::Rtn, 8, ClipRule::row_max()};
    p.policy.clip_search = gptq_lite_search();
    p.compressors = {Compressor::Lzma9Extreme, Compressor::Brotli11, Compressor::Cm};
  } else if (name == "pr915") {
    p.policy.attn = RolePolicy{QuantMethod::Rtn, 6, ClipRule::row_max()};
    p.policy.mlp = RolePolicy{QuantMethod::Rtn, 6, ClipRule::row_max()};
    p.policy.embed = RolePolicy{QuantMethod::Rtn, 8, ClipRule::row_max()};
    p.policy.clip_search = gptq_lite_search();
    p.compressors = {Compressor::Lzma9Extreme, Compressor::Brotli11, Compressor::Cm};
  } else if (name == "pr1672") {
    // Table (a): "AR-self-gen GPTQ int6 + eigen repair (percentile clip search)". Every matrix is
    // GPTQ int6 with a row-max base and the §7.4 percentile search by Hessian-weighted error, as in
    // pr1072. The gate role here is the GDN W_a/W_b (H, d) projections (no other gate in the model):
    // the seed quantises every GDN matrix, so they take int6 GPTQ too (their input is the block
    // input, whose Hessian Q/K/V already share). A_log, dt_bias, the short convs and the norms
    // stay fp16 passthrough (role Passthrough). The embedding format is not in the spec: int8 GPTQ.
    const RolePolicy int6{QuantMethod::Gptq, 6, ClipRule::row_max()};
    p.policy.attn = p.policy.mlp = p.policy.gate = int6;
    p.policy.embed = RolePolicy{QuantMethod::Gptq, 8, ClipRule::row_max()};
    p.policy.clip_search = gptq_lite_search();
    p.compressors = {Compressor::Brotli11};             // §7.12: brotli-11 (beats zstd-22 by ≈700 KB)
    p.orders = {LayoutOrder::SizeDescending};           // §7.12: tensors sorted by size, largest first
    p.note = "calibration uses training batches; the seed's AR self-generated calibration (§7.5) is not implemented";
  } else if (name == "baseline") {
    const RolePolicy int8{QuantMethod::Rtn, 8, ClipRule::percentile(quant::kBaselineClipQuantile)};
    p.policy.attn = p.policy.mlp = p.policy.embed = p.policy.gate = int8;
    p.compressors = {Compressor::Zlib9};
  } else {
    std::string known;
    for (const auto& n : pack_preset_names()) known += (known.empty() ? "" : ", ") + n;
    PG_FAIL("unknown pack preset '{}'; known presets: {} (and 'top' for top-2026-04-27)", name, known);
  }
  return p;
}

SolverOptions preset_solver(const PackPreset& preset) {
  SolverOptions s;
  if (!preset.compressors.empty()) s.compressors = preset.compressors;
  if (!preset.orders.empty()) s.orders = preset.orders;
  return s;
}

}  // namespace pgolf::artifact
