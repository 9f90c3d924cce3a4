#pragma once
// Late QAT for the trainer (TECHNIQUES.md §7.3): which parameters are fake-quantized, when, and the
// two calls a training step makes. The op itself is quant/fake_quant.h.
//
// Late QAT: on once the learning-rate multiplier drops below `lr_threshold` (0.15 from
// R:2026-03-22 on; 0.1 in R:2026-03-21; 0.5 in seed #1072). Whole-run QAT = lr_threshold > 1.
#include <cstddef>
#include <vector>

#include "model/params.h"
#include "quant/fake_quant.h"

namespace pgolf::quant {


struct QatConfig {
  bool enabled = false;
  double lr_threshold = 0.15;  // on while the lr multiplier is < this (§7.3)
  FakeQuantSpec spec;
  bool clipped_ste = false;    // false = the spec's identity gradient
  // Roles that are fake-quantized: the block matrices (Q, K, V, O, MLP up/down) by default; the tied
  // embedding only when asked (the records' QAT never touched it).
  bool attn = true, mlp = true, embed = false;
};

bool qat_role_selected(const QatConfig& cfg, model::QuantRole role);
// cfg.enabled && lr_multiplier < cfg.lr_threshold.
bool qat_active(const QatConfig& cfg, double lr_multiplier);

// What apply_fake_quant changed, so finish_fake_quant can undo it. The scale / master buffers are
// kept between steps (allocated on the first use, reused while the shapes match).
struct QatStash {
  struct Entry {
    size_t index = 0;      // into ParamTable::all()
    bool stashed = false;  // f32 path: the master was copied into masters[index]
  };
  std::vector<Entry> entries;
  std::vector<Tensor> scales;   // per parameter index: (rows) f32 on the parameter's device
  std::vector<Tensor> masters;  // per parameter index: f32 copy of the master (f32 path only)
  bool active() const { return !entries.empty(); }
};

// Per training step, AFTER the optimizer step's ParamTable::sync_compute() (i.e. right before the
// forward of the next micro-steps) and only while qat_active(cfg, lr_mult):
//   - bf16 path (Param::compute defined): compute ← fake_quant(value). The forward reads compute,
//     the backward's gradients land in grad, the optimizer updates the f32 master: the STE.
//   - f32 path (compute undefined, e.g. the CPU model): value is copied into the stash and
//     overwritten with fake_quant(value); finish_fake_quant MUST run before the optimizer step (and
//     before any checkpoint/export) to restore the masters.
// Only 2-D parameters of the selected roles are touched. Returns the number of tensors changed.
// `stash` must be empty (finish_fake_quant empties it).
size_t apply_fake_quant(model::ParamTable& params, const QatConfig& cfg, QatStash& stash);
// After the backward of all micro-steps, BEFORE the optimizer step: masks the gradients of the
// fake-quantized tensors when cfg.clipped_ste, restores the f32 masters, empties the stash.
void finish_fake_quant(model::ParamTable& params, const QatConfig& cfg, QatStash& stash);

}  // namespace pgolf::quant
