#pragma once
// The parameter table: every trainable tensor with its metadata in one place (name, shape,
// optimizer group, weight decay, quantizer role, init). Optimizers, checkpoints, safetensors,
// quantization and the artifact all walk this table; nothing uses hard-coded indices.
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace pgolf::model {

enum class OptGroup : uint8_t { Muon, AdamEmbed, AdamScalar };
// What the quantizer should do with a tensor (issue "Quantization"): role decides bits and clip.
enum class QuantRole : uint8_t { Embed, AttnQ, AttnK, AttnV, AttnO, MlpUp, MlpDown, Gate, Passthrough };
// FirstRowOnes: row 0 is 1, the other rows 0 (resid_mix = [m0 = 1, m1 = 0]).
// LogUniform: log(u), u ~ U(0, init_value) (GatedDeltaNet A_log, §5.18). InvSoftplusLogUniformDt: softplus^-1(dt),
// dt log-uniform in [1e-3, 1e-1] (GatedDeltaNet dt_bias, §5.18). Both drawn on the host from Philox.
enum class InitKind : uint8_t {
  Zeros, Ones, Constant, Normal, KaimingUniform, Orthogonal, FirstRowOnes, LogUniform, InvSoftplusLogUniformDt
};

struct ParamSpec {
  std::string name;       // reference module's tensor name, e.g. "blocks.0.attn.c_q.weight"
  Shape shape;
  OptGroup group = OptGroup::AdamScalar;
  float weight_decay = 0.f;  // multiplier of the group's weight decay (0 = never decayed)
  QuantRole quant = QuantRole::Passthrough;
  InitKind init = InitKind::Zeros;
  float init_value = 0.f;  // Constant value, or Normal std
};

struct Param {
  ParamSpec spec;
  Tensor value;    // f32 master copy
  Tensor grad;     // f32, accumulated over micro-steps
  Tensor compute;  // bf16 copy used by GPU matmuls (undefined when the model computes in f32)
};

class ParamTable {
 public:
  Param& add(ParamSpec spec);  // appends; names must be unique
  Param& get(const std::string& name);
  const Param& get(const std::string& name) const;
  Param* find(const std::string& name);
  const Param* find(const std::string& name) const;
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  int64_t count_elements() const;
  // Allocate value/grad (and compute when `compute_dtype` is BF16) on `dev`. Every grad is a view into one
  // flat f32 buffer (grad_flat), each starting at a multiple of kGradAlign elements in table order, so a
  // collective can reduce any run of consecutive parameters in place (the gaps stay zero).
  void allocate(Device dev, DType compute_dtype);
  void zero_grads();
  // Frozen base weights (per-document LoRA TTT adapts its own adapters only): the gradient buffer is freed
  // and every grad left undefined, which the tape reads as "no gradient wanted", so the backward skips the
  // weights' dW GEMMs, the embedding scatter and the scalar reductions. Unfreezing allocates zeroed grads
  // again (with the same layout). A no-op when the state does not change.
  void set_frozen(bool frozen);
  bool frozen() const { return frozen_; }
  static constexpr int64_t kGradAlign = 64;  // 256 bytes: vector loads stay aligned in every grad view
  const Tensor& grad_flat() const { return grad_flat_; }
  // [begin, end) of parameter i's grad inside grad_flat (end - begin = numel).
  std::pair<int64_t, int64_t> grad_range(size_t i) const { return grad_ranges_[i]; }
  // Refresh the bf16 compute copies from the f32 masters (after each optimizer step).
  void sync_compute();
  // Fill every value from its spec's InitKind (Philox: seed + a counter range per parameter index,
  // so values do not depend on the device), then refresh the compute copies.
  void init(uint64_t seed);

 private:
  void allocate_grads();  // grad_flat_ and the grad views, zeroed, on dev_

  std::vector<Param> params_;
  Device dev_ = Device::CPU;
  bool frozen_ = false;
  Tensor grad_flat_;
  std::vector<std::pair<int64_t, int64_t>> grad_ranges_;
};

}  // namespace pgolf::model
