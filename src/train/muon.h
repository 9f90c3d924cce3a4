#pragma once
// Muon (TECHNIQUES.md §6.1) on the 2-D block matrices: Nesterov momentum, optional MuonEq-R row
// normalisation, Frobenius normalisation, K Newton–Schulz iterations, shape scaling, decoupled
// weight decay. Built from ops kernels only, so the same code runs on CPU (f32) and GPU (bf16 NS).
#include <array>
#include <map>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/params.h"

namespace pgolf::train {

using NsCoeffs = std::array<float, 3>;  // (a, b, c) of X <- a X + (b A + c A^2) X, A = X X^T

// The baseline's fixed quintic (3.4445, -4.7750, 2.0315), used at every iteration.
std::vector<NsCoeffs> ns_coefficients_baseline();
// Polar Express (Amsel et al. 2025): one tuple per iteration; reused cyclically past 5 steps.
std::vector<NsCoeffs> ns_coefficients_polar_express();

// Buffers for orthogonalising one (R, C) shape; s = min(R, C).
struct NsScratch {
  Tensor x0, x1;  // (R, C) in the NS dtype
  Tensor a, b;    // (s, s) in the NS dtype
  static NsScratch make(int64_t rows, int64_t cols, DType dtype, Device dev);
};

// Orthogonalises `x` (R, C) in place of the scratch buffers: x is first scaled to unit Frobenius
// norm (x / max(||x||_F, 1e-7), which equals the reference's x / (||x||_F + 1e-7) to a relative
// 1e-7/||x||), then `steps` iterations run on the wide orientation (when R > C the iteration uses
// A = X^T X and X <- a X + X (b A + c A^2), the transpose of the reference's form, so nothing is
// transposed in memory). `x` must be one of s.x0 / s.x1; returns the buffer holding the result.
Tensor newton_schulz(const Tensor& x, NsScratch& s, const std::vector<NsCoeffs>& coeffs, int steps);

struct MuonOptions {
  std::vector<NsCoeffs> coeffs = ns_coefficients_baseline();
  int steps = 5;
  bool nesterov = true;
  bool row_normalize = false;
  DType ns_dtype = DType::F32;  // bf16 on GPU (as the reference), f32 on CPU
};

class Muon {
 public:
  Muon(std::vector<model::Param*> params, const MuonOptions& opt, Device dev);
  // hp_momentum: (2) f32 device tensor [momentum, grad_scale]; hp_apply: (3 * n) f32, slice i =
  // [lr, weight_decay, shape_scale] of parameter i (fill with apply_hp()).
  void step(const Tensor& hp_momentum, const Tensor& hp_apply);
  // Host values for hp_apply's slice of parameter i.
  std::array<float, 3> apply_hp(size_t i, float lr, float weight_decay) const;
  size_t size() const { return params_.size(); }
  const std::vector<model::Param*>& params() const { return params_; }
  std::vector<Tensor>& momentum_buffers() { return bufs_; }
  void reset_state();

 private:
  std::vector<model::Param*> params_;
  std::vector<Tensor> bufs_;  // f32 momentum, one per parameter
  std::map<std::pair<int64_t, int64_t>, NsScratch> scratch_;
  MuonOptions opt_;
};

}  // namespace pgolf::train
