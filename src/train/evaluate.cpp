#include "train/evaluate.h"

#include <algorithm>

#include "core/error.h"
#include "dist/comm.h"

namespace pgolf::train {

Validator::Validator(std::vector<uint16_t> tokens, const data::ByteLuts& luts, int64_t seq_len, int64_t rows_per_batch,
                     Device dev)
    : tokens_(std::move(tokens)), seq_len_(seq_len), rows_per_batch_(rows_per_batch) {
  const auto n = static_cast<int64_t>(tokens_.size());
  PG_CHECK(n > seq_len_ && (n - 1) % seq_len_ == 0, "validator: {} val tokens is not k*{}+1", n, seq_len_);
  rows_ = (n - 1) / seq_len_;
  rows_per_batch_ = std::max<int64_t>(1, std::min(rows_per_batch_, rows_));
  bytes_ = data::count_scored_bytes(luts, tokens_.data(), 1, n);
  PG_CHECK(bytes_ > 0, "validator: the val tokens cover 0 bytes (wrong tokenizer?)");
  ids_ = Tensor::empty(Shape{rows_per_batch_, seq_len_}, DType::I32, dev);
  targets_ = Tensor::empty(Shape{rows_per_batch_, seq_len_}, DType::I32, dev);
  losses_ = Tensor::empty(Shape{rows_per_batch_ * seq_len_}, DType::F32, dev);
  host_ids_.resize(static_cast<size_t>(rows_per_batch_ * seq_len_));
  host_targets_.resize(host_ids_.size());
}

double Validator::score_batch(model::GPT& model, Arena& arena, int64_t r0) {
  const int64_t nr = std::min(rows_per_batch_, rows_ - r0);
  for (int64_t i = 0; i < nr * seq_len_; ++i) {
    host_ids_[static_cast<size_t>(i)] = tokens_[static_cast<size_t>(r0 * seq_len_ + i)];
    host_targets_[static_cast<size_t>(i)] = tokens_[static_cast<size_t>(r0 * seq_len_ + i + 1)];
  }
  Shape sh{nr, seq_len_};
  Tensor ids = ids_.slice(0, nr), targets = targets_.slice(0, nr);
  ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
  targets.copy_from(Tensor::from_blob(host_targets_.data(), sh, DType::I32, Device::CPU));
  Tensor losses = losses_.slice(0, nr * seq_len_);
  model.forward_losses(ids, targets, arena, losses);
  double nll = 0;
  for (float l : losses.to_float_vector()) nll += l;
  return nll;
}

data::BpbAccumulator Validator::run(model::GPT& model, Arena& arena, dist::Communicator* comm) {
  const int64_t batches = (rows_ + rows_per_batch_ - 1) / rows_per_batch_;
  const int64_t world = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  // Batch b is scored by rank b % world into slot b / world of that rank's list.
  const int64_t per_rank = (batches + world - 1) / world;
  std::vector<double> mine(static_cast<size_t>(per_rank), 0.0);
  scored_ = 0;
  for (int64_t b = rank; b < batches; b += world) {
    mine[static_cast<size_t>(b / world)] = score_batch(model, arena, b * rows_per_batch_);
    ++scored_;
  }
  const std::vector<double> all = world > 1 ? comm->all_gather_f64(mine) : mine;  // rank r's list at [r per, ...)
  data::BpbAccumulator acc;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t nr = std::min(rows_per_batch_, rows_ - b * rows_per_batch_);
    acc.add(all[static_cast<size_t>((b % world) * per_rank + b / world)], nr * seq_len_, 0);
  }
  acc.bytes = bytes_;
  return acc;
}

}  // namespace pgolf::train
