#pragma once
// `pgolf pack` as a library: a trained GPT (+ Hessians) -> a budget-fitted artifact, with the
// numbers the report needs (sizes, per-tensor quantization error).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "artifact/budget.h"
#include "artifact/code_bytes.h"
#include "artifact/format.h"
#include "artifact/writer.h"
#include "model/gpt.h"
#include "quant/calibrate.h"
#include "quant/policy.h"

namespace pgolf::artifact {

struct PackModelOptions {
  quant::QuantPolicy policy;  // role -> quantizer (defaults: TECHNIQUES §7.1/§7.7)
  bool lqer = false;          // LQER on the worst tensors (§7.10)
  int lqer_k = quant::kLqerDefaultTopK, lqer_rank = quant::kLqerDefaultRank, lqer_group = quant::kLqerDefaultGroup;
  SolverOptions solver;
  uint64_t counted_limit = kCountedByteLimit;  // artifact + code bytes must stay <= this
  uint64_t code_bytes = 0;
  bool allow_over = false;  // keep the result (reached = false) instead of throwing when over the limit
};

struct TensorPackStats {
  std::string name;
  std::string role, method;
  int bits = 16;
  int64_t numel = 0;
  bool hessian = false;       // a calibration Hessian was used
  bool lqer = false;
  double rel_error = 0;       // ||W − Q||_F / ||W||_F (after pruning and LQER)
  double rel_proxy = -1;      // sqrt(tr(E H Eᵀ) / tr(W H Wᵀ)) = ||(W−Q)Xᵀ|| / ||W Xᵀ||; -1 without a Hessian
};

struct PackModelResult {
  Artifact artifact;
  BudgetResult budget;  // bytes = the serialized file; reached = fits counted_limit − code_bytes
  std::vector<TensorPackStats> tensors;
  std::vector<std::string> lqer_tensors;
  uint64_t artifact_bytes() const { return budget.bytes.size(); }
};

// Throws (naming the numbers) when the result does not fit and allow_over is false.
PackModelResult pack_model(const model::GPT& gpt, const std::map<std::string, quant::LinearHessian>& hessians,
                           const PackModelOptions& opt);

// Per-tensor error of `a` against the model's f32 weights.
std::vector<TensorPackStats> quantization_stats(const Artifact& a, const model::GPT& gpt,
                                                const std::map<std::string, quant::LinearHessian>& hessians);

}  // namespace pgolf::artifact
