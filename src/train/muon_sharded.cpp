// Muon over data-parallel ranks (TECHNIQUES.md §6.2, docs/DISTRIBUTED.md "Sharded Muon"): the bank layout, the
// sharded step with replicated momentum, and "Parallel Muon" (reduce-scattered gradients, sharded momentum).
#include <algorithm>

#include "core/error.h"
#include "dist/comm.h"
#include "ops/optim.h"
#include "train/muon.h"

namespace pgolf::train {
namespace {

Tensor apply_slice(const Tensor& hp_apply, size_t i) {
  return hp_apply.slice(static_cast<int64_t>(3 * i), static_cast<int64_t>(3 * i + 3));
}
// Matrix `at` of a (K, R, C) stack, as (R, C).
Tensor mat_at(const Tensor& stack, int64_t at) { return stack.slice(at, at + 1).view(Shape{stack.dim(1), stack.dim(2)}); }

}  // namespace

void Muon::shard_over(dist::Communicator* comm, bool shard_momentum) {
  const bool was_momentum_sharded = shards_momentum();
  banks_.clear();
  scratch_.clear();
  where_.assign(params_.size(), {0, 0});
  rs_send_ = Tensor();
  rs_send_n_ = 0;
  grads_reduced_ = grads_in_place_ = false;
  comm_ = comm && comm->world() > 1 ? comm : nullptr;
  shard_momentum_ = shard_momentum;
  if (!comm_) {
    if (stacks_.empty() || was_momentum_sharded) build_single();
    return;
  }
  if (was_momentum_sharded && !shard_momentum_) build_single();  // full momentum buffers again, from zero
  // The single-rank stacks hold a batched scratch for every matrix: the sharded steps do not use them.
  stacks_.clear();
  if (!shard_momentum_) {
    // The replicated-momentum step orthogonalises one matrix at a time: one scratch set per shape.
    for (auto* p : params_) {
      auto key = std::make_pair(p->spec.shape[0], p->spec.shape[1]);
      if (!scratch_.count(key)) scratch_.emplace(key, NsScratch::make(key.first, key.second, opt_.ns_dtype, dev_));
    }
  }
  const int world = comm_->world(), rank = comm_->rank();
  // Banks in a fixed order (by shape, members in list order), identical on every rank.
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_shape;
  for (size_t i = 0; i < params_.size(); ++i) by_shape[{params_[i]->spec.shape[0], params_[i]->spec.shape[1]}].push_back(i);
  int64_t dealt = 0;  // matrices dealt so far: the round-robin continues across banks, so ranks stay within one
  int64_t send_max = 0;
  for (auto& [shape, members] : by_shape) {
    Bank b;
    b.rows = shape.first;
    b.cols = shape.second;
    b.members = members;
    const auto k = static_cast<int64_t>(members.size());
    b.per_rank = (k + world - 1) / world;
    // Member j goes to rank (dealt + j) mod world at slot j / world: a rank's members of one bank get distinct
    // slots below per_rank, so every rank's part of the bank is the same size (what reduce-scatter and
    // all-gather need); slots no member uses are padding (the reference pads 11 -> 16 the same way).
    std::vector<char> used(static_cast<size_t>(world * b.per_rank), 0);
    for (int64_t j = 0; j < k; ++j) {
      const int owner = static_cast<int>((dealt + j) % world);
      b.owner.push_back(owner);
      b.slot.push_back(j / world);
      used[static_cast<size_t>(owner * b.per_rank + j / world)] = 1;
      where_[members[static_cast<size_t>(j)]] = {banks_.size(), static_cast<size_t>(j)};
    }
    dealt += k;
    b.gathered = Tensor::zeros(Shape{world * b.per_rank, b.rows, b.cols}, opt_.ns_dtype, dev_);
    if (!shard_momentum_) {
      // Unused slots stay zero; they travel but are never applied.
      b.send = Tensor::zeros(Shape{b.per_rank, b.rows, b.cols}, opt_.ns_dtype, dev_);
    } else {
      for (int64_t s = 0; s < world * b.per_rank; ++s) {
        if (used[static_cast<size_t>(s)]) continue;
        b.idle.push_back(s);
        if (s / b.per_rank == rank) b.my_idle.push_back(s % b.per_rank);
      }
      b.mom = Tensor::zeros(Shape{b.per_rank, b.rows, b.cols}, DType::F32, dev_);
      b.ns = NsScratch::make(b.rows, b.cols, opt_.ns_dtype, dev_, b.per_rank);
      send_max = std::max(send_max, world * b.per_rank * b.rows * b.cols);
    }
    banks_.push_back(std::move(b));
  }
  if (shard_momentum_) {
    // Momentum only for this rank's matrices: bufs_ become views of its slots (the full buffers are released).
    bufs_.assign(params_.size(), Tensor());
    for (const Bank& b : banks_)
      for (size_t k = 0; k < b.members.size(); ++k)
        if (b.owner[k] == rank) bufs_[b.members[k]] = mat_at(b.mom, b.slot[k]);
    rs_send_n_ = send_max;
  }
}

int Muon::owner(size_t i) const {
  if (!comm_) return -1;
  const auto [bank, k] = locate(i);
  return banks_[bank].owner[k];
}

size_t Muon::owned_count() const {
  if (!comm_) return params_.size();
  size_t n = 0;
  for (const Bank& b : banks_)
    for (int o : b.owner) n += o == comm_->rank() ? 1 : 0;
  return n;
}

size_t Muon::momentum_bytes() const {
  size_t n = 0;
  if (shards_momentum()) {
    for (const Bank& b : banks_) n += b.mom.nbytes();
  } else {
    for (const Tensor& t : bufs_) n += t.nbytes();
  }
  return n;
}

// ---- replicated momentum: every rank updates every buffer, owners orthogonalise

Tensor Muon::momentum_and_ns(size_t i, const Tensor& hp_momentum, bool orthogonalize) {
  model::Param& p = *params_[i];
  NsScratch& s = scratch_.at({p.spec.shape[0], p.spec.shape[1]});
  ops::muon_momentum(p.grad, bufs_[i], s.x0, hp_momentum, opt_.nesterov);  // U -> x0 (NS dtype)
  if (!orthogonalize) return Tensor();
  if (opt_.row_normalize) ops::row_normalize(s.x0, 1e-7f);
  return newton_schulz(s.x0, s, opt_.coeffs, opt_.steps);
}

void Muon::apply_gathered(const Bank& b, const Tensor& hp_apply) {
  for (size_t k = 0; k < b.members.size(); ++k) {
    const int64_t at = b.owner[k] * b.per_rank + b.slot[k];  // all_gather puts rank r's slots at [r per, (r+1) per)
    ops::muon_apply(params_[b.members[k]]->value, mat_at(b.gathered, at), apply_slice(hp_apply, b.members[k]));
  }
}

void Muon::step_sharded(const Tensor& hp_momentum, const Tensor& hp_apply) {
  const int rank = comm_->rank();
  for (Bank& b : banks_) {
    for (size_t k = 0; k < b.members.size(); ++k) {
      const bool mine = b.owner[k] == rank;
      Tensor x = momentum_and_ns(b.members[k], hp_momentum, mine);
      if (mine) mat_at(b.send, b.slot[k]).copy_from(x);
    }
    comm_->all_gather(b.send, b.gathered);
    apply_gathered(b, hp_apply);
  }
}

// ---- sharded momentum ("Parallel Muon")

void Muon::reduce_grads(bool summed) {
  PG_CHECK(shards_momentum(), "Muon::reduce_grads: only with sharded momentum");
  grads_reduced_ = true;
  grads_in_place_ = summed;
  if (summed) return;  // the owners' grads hold the sums: read in place
  const int world = comm_->world();
  if (!rs_send_.defined()) rs_send_ = Tensor::zeros(Shape{rs_send_n_}, DType::F32, dev_);
  for (Bank& b : banks_) {
    if (!b.grad.defined()) b.grad = Tensor::zeros(Shape{b.per_rank, b.rows, b.cols}, DType::F32, dev_);
    // The grads are scattered over the flat gradient buffer in table order, with other tensors between them:
    // copy them into one padded bank, rank r's slots at [r per, (r+1) per), and reduce-scatter it. Summing only
    // the matrices a rank owns moves half the bytes of an all-reduce (which is a reduce-scatter + all-gather).
    const int64_t n = world * b.per_rank;
    const Tensor send = rs_send_.slice(0, n * b.rows * b.cols).view(Shape{n, b.rows, b.cols});
    for (size_t k = 0; k < b.members.size(); ++k)
      mat_at(send, b.owner[k] * b.per_rank + b.slot[k]).copy_from(params_[b.members[k]]->grad);
    for (int64_t s : b.idle) mat_at(send, s).zero_();  // padding: zero, not another bank's stale gradients
    comm_->reduce_scatter_sum(send.view(Shape{n * b.rows * b.cols}), b.grad.view(Shape{b.grad.numel()}));
  }
}

Tensor Muon::owned_grad(size_t i) const {
  PG_CHECK(shards_momentum() && grads_reduced_, "Muon::owned_grad: needs sharded momentum and reduce_grads() first");
  const auto [bank, k] = locate(i);
  const Bank& b = banks_[bank];
  if (b.owner[k] != comm_->rank()) return Tensor();
  return grads_in_place_ ? params_[i]->grad : mat_at(b.grad, b.slot[k]);
}

void Muon::step_sharded_momentum(const Tensor& hp_momentum, const Tensor& hp_apply) {
  PG_CHECK(grads_reduced_, "Muon: with sharded momentum, reduce_grads() must run before every step()");
  grads_reduced_ = false;
  const int rank = comm_->rank();
  for (Bank& b : banks_) {
    // This rank's matrices of the bank, batched: momentum, Nesterov, NS on (per_rank, R, C). Padding slots hold
    // zeros, which NS keeps at zero (x / max(||x||, 1e-7)); they travel in the all-gather but are never applied.
    for (size_t k = 0; k < b.members.size(); ++k)
      if (b.owner[k] == rank)
        ops::muon_momentum(grads_in_place_ ? params_[b.members[k]]->grad : mat_at(b.grad, b.slot[k]),
                           mat_at(b.mom, b.slot[k]), mat_at(b.ns.x0, b.slot[k]), hp_momentum,
                           opt_.nesterov);  // U -> slot (NS dtype)
    for (int64_t s : b.my_idle) mat_at(b.ns.x0, s).zero_();
    if (opt_.row_normalize) ops::row_normalize(b.ns.x0.view(Shape{b.per_rank * b.rows, b.cols}), 1e-7f);
    const Tensor x = newton_schulz(b.ns.x0, b.ns, opt_.coeffs, opt_.steps);
    comm_->all_gather(x, b.gathered);
    apply_gathered(b, hp_apply);
  }
}

void Muon::stage_full_momentum(bool gather) {
  if (!shards_momentum()) return;
  for (Bank& b : banks_) {
    b.mom_full = Tensor::zeros(Shape{comm_->world() * b.per_rank, b.rows, b.cols}, DType::F32, dev_);
    if (gather) comm_->all_gather(b.mom, b.mom_full);
  }
}

void Muon::unstage_full_momentum(bool keep) {
  if (!shards_momentum()) return;
  const int rank = comm_->rank();
  for (Bank& b : banks_) {
    if (keep && b.mom_full.defined())
      for (size_t k = 0; k < b.members.size(); ++k)
        if (b.owner[k] == rank)
          mat_at(b.mom, b.slot[k]).copy_from(mat_at(b.mom_full, b.owner[k] * b.per_rank + b.slot[k]));
    b.mom_full = Tensor();
  }
}

Tensor Muon::full_momentum(size_t i) const {
  if (!shards_momentum()) return bufs_[i];
  const auto [bank, k] = locate(i);
  const Bank& b = banks_[bank];
  PG_CHECK(b.mom_full.defined(), "Muon: with sharded momentum, stage_full_momentum() before reading the full momenta");
  return mat_at(b.mom_full, b.owner[k] * b.per_rank + b.slot[k]);
}

}  // namespace pgolf::train
