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
  // the orthogonalised updates, and every rank applies all of them. Null or a world of 1 restores the single-rank
  // step. Call it before the first step: switching to or from sharded momentum starts the momentum from zero.
  //  - shard_momentum = false: the grads must already be summed over the ranks; every rank keeps and updates every
  //    momentum buffer (an elementwise op). Each matrix goes through the same kernels as in the single-rank step, so
  //    the result is bit-identical to it.
  //  - shard_momentum = true ("Parallel Muon"): each rank needs the summed gradients of the matrices it owns only:
  //    reduce_grads() gets them (one reduce_scatter per bank, or in place when the caller already summed them, e.g.
  //    reduced each to its owner during the backward); momentum is allocated for those only (1/world of the
  //    memory), and the owner's Newton–Schulz runs batched over its slots of the bank.
  void shard_over(dist::Communicator* comm, bool shard_momentum = false);
  bool sharded() const { return comm_ != nullptr; }
  bool shards_momentum() const { return comm_ != nullptr && shard_momentum_; }
  // Matrices this rank orthogonalises per step (all of them when not sharded).
  size_t owned_count() const;
  // Bytes of momentum this rank holds (the replicated buffers, or its shards).
  size_t momentum_bytes() const;

  // Sharded momentum only; the first half of a step, before step(). summed = false: each rank's grads are its own
  // (not yet summed over the ranks), one reduce_scatter_sum per bank sums them into their owners' shards (copied
  // into a padded bank buffer first). summed = true: the owners' grads already hold the sums (exact accumulation
  // summed every gradient, or the trainer reduced each matrix to its owner during the backward); the step reads
  // them in place (other ranks' grads of the matrix are not read).
  void reduce_grads(bool summed);
  // Sharded momentum: the summed gradient of matrix i if this rank owns it, else an undefined tensor.
  Tensor owned_grad(size_t i) const;
  // Sharded (either form): the rank that orthogonalises matrix i (with sharded momentum: the one that needs its
  // summed gradient); -1 when not sharded.
  int owner(size_t i) const;
  // Sharded momentum, for checkpoints that hold every matrix's full momentum (the format of a replicated run, so a
  // run can resume with another world size or with the switch off). stage_full_momentum allocates full copies,
  // filled from their owners when `gather` (a collective: every rank must call it); full_momentum(i) is then matrix
  // i's copy; unstage_full_momentum frees them, first copying this rank's own matrices back into its shards when
  // `keep` (after a checkpoint was read into the copies).
  void stage_full_momentum(bool gather);
  void unstage_full_momentum(bool keep);
  Tensor full_momentum(size_t i) const;

 private:
  // One bank: the matrices of one shape, with this rank's slots and the gather buffers.
  struct Bank {
    int64_t rows = 0, cols = 0;
    std::vector<size_t> members;  // indices into params_, in list order
    std::vector<int> owner;       // per member: the rank that orthogonalises it
    std::vector<int64_t> slot;    // per member: its place in the owner's send buffer
    int64_t per_rank = 0;         // send-buffer slots per rank
    Tensor send;                  // (per_rank, R, C) this rank's updates, NS dtype (replicated momentum only)
    Tensor gathered;              // (world * per_rank, R, C) every rank's updates
    // Sharded momentum only:
    std::vector<int64_t> idle;    // slots of world * per_rank that no member uses (padding)
    std::vector<int64_t> my_idle; // this rank's slots that no member uses
    Tensor grad;                  // (per_rank, R, C) f32: summed gradients of this rank's matrices (reduce-scatter
                                  // only; allocated at its first use)
    Tensor mom;                   // (per_rank, R, C) f32: their momentum
    Tensor mom_full;              // (world * per_rank, R, C) f32: everyone's momentum, only while staged
    NsScratch ns;                 // (per_rank, R, C) batched Newton–Schulz scratch
  };
  void build_single();
  void step_single(const Tensor& hp_momentum, const Tensor& hp_apply);
  void step_sharded(const Tensor& hp_momentum, const Tensor& hp_apply);
  void step_sharded_momentum(const Tensor& hp_momentum, const Tensor& hp_apply);
  // Momentum update of matrix i; with `orthogonalize`, also Newton–Schulz: returns the buffer holding the update.
  Tensor momentum_and_ns(size_t i, const Tensor& hp_momentum, bool orthogonalize);
  // Applies every member's update from b.gathered (WD then add), on every rank.
  void apply_gathered(const Bank& b, const Tensor& hp_apply);
  // Where matrix i lives in the banks: (bank, member position).
  std::pair<size_t, size_t> locate(size_t i) const { return where_[i]; }

  std::vector<model::Param*> params_;
  // f32 momentum, one per parameter; with sharded momentum, views of this rank's slots (undefined for the others').
  std::vector<Tensor> bufs_;
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
  bool shard_momentum_ = false;
  bool grads_reduced_ = false;  // sharded momentum: reduce_grads() ran since the last step()
  bool grads_in_place_ = false; // ... and the owners' summed grads are the parameters' own (else in Bank::grad)
  std::vector<Bank> banks_;
  std::vector<std::pair<size_t, size_t>> where_;  // per parameter: (bank, member position)
  Tensor rs_send_;  // sharded momentum: (max over banks of world * per_rank * R * C) f32 reduce-scatter input
                    // (allocated at the first reduce-scatter)
  int64_t rs_send_n_ = 0;
};

}  // namespace pgolf::train
