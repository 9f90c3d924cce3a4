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

namespace pgolf::dist {
class Communicator;
}

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
  // batch > 0: a stack of `batch` matrices, (batch, R, C) and (batch, s, s).
  static NsScratch make(int64_t rows, int64_t cols, DType dtype, Device dev, int64_t batch = 0);
};

// Orthogonalises `x` (R, C), or each matrix of a stack (K, R, C) with batched products, in place of
// the scratch buffers: x is first scaled to unit Frobenius
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

  // Sharded step (TECHNIQUES.md §6.2, docs/DISTRIBUTED.md): with comm->world() > 1, the matrices are grouped by
  // shape into banks and dealt round-robin over the ranks (matrix i of the whole list to rank i mod world, as the
  // reference's §4.4 split); each rank runs Newton–Schulz on its own matrices only, one all_gather per bank shares
  // the orthogonalised updates, and every rank applies all of them. Every matrix goes through exactly the same
  // kernels as in the single-rank step, so the result is bit-identical to it. Momentum stays replicated (each rank
  // updates every buffer, a cheap elementwise op) so checkpoints and resume do not depend on the world size.
  // Null or a world of 1 restores the single-rank step. The grads must already be summed over the ranks.
  void shard_over(dist::Communicator* comm);
  bool sharded() const { return comm_ != nullptr; }
  // Matrices this rank orthogonalises per step (all of them when not sharded).
  size_t owned_count() const;

 private:
  // One bank: the matrices of one shape, with this rank's slots and the gather buffers.
  struct Bank {
    int64_t rows = 0, cols = 0;
    std::vector<size_t> members;  // indices into params_, in list order
    std::vector<int> owner;       // per member: the rank that orthogonalises it
    std::vector<int64_t> slot;    // per member: its place in the owner's send buffer
    int64_t per_rank = 0;         // send-buffer slots per rank
    Tensor send;                  // (per_rank, R, C) this rank's updates, NS dtype
    Tensor gathered;              // (world * per_rank, R, C) every rank's updates
  };
  void step_single(const Tensor& hp_momentum, const Tensor& hp_apply);
  void step_sharded(const Tensor& hp_momentum, const Tensor& hp_apply);
  // Momentum update of matrix i; with `orthogonalize`, also Newton–Schulz: returns the buffer holding the update.
  Tensor momentum_and_ns(size_t i, const Tensor& hp_momentum, bool orthogonalize);

  std::vector<model::Param*> params_;
  std::vector<Tensor> bufs_;  // f32 momentum, one per parameter
  std::map<std::pair<int64_t, int64_t>, NsScratch> scratch_;  // per shape, for the sharded step only
  // The single-rank step orthogonalises each shape's matrices together: one batched GEMM per product.
  struct Stack {
    std::vector<size_t> members;  // indices into params_, in list order
    NsScratch scratch;            // (K, R, C) / (K, s, s)
  };
  std::vector<Stack> stacks_;
  MuonOptions opt_;
  Device dev_;
  dist::Communicator* comm_ = nullptr;
  std::vector<Bank> banks_;
};

}  // namespace pgolf::train
