#include "artifact/budget.h"

#include <cmath>

#include "core/error.h"
#include "quant/lqer.h"

namespace pgolf::artifact {

BudgetResult fit_to_budget(Artifact& a, const SolverOptions& opt, uint64_t max_file_bytes) {
  BudgetResult r;
  r.bytes = serialize_artifact(a, opt, &r.report);
  if (r.bytes.size() <= max_file_bytes) {
    r.reached = true;
    r.prune.reached = true;
    r.prune.bytes = r.bytes.size();
    return r;
  }
  const SolverOptions pinned = pin_choices(opt, r.report);
  std::vector<quant::QuantizedMatrix*> matrices;
  for (StoredTensor& t : a.tensors)
    if (t.kind == StorageKind::IntRow) matrices.push_back(&t.q);
  r.prune = quant::prune_to_budget(
      matrices, [&] { return static_cast<uint64_t>(serialize_artifact(a, pinned).size()); }, max_file_bytes);
  if (r.prune.pruned > 0) r.bytes = serialize_artifact(a, opt, &r.report);
  r.reached = r.bytes.size() <= max_file_bytes;
  return r;
}

std::vector<std::string> add_lqer_to_worst(Artifact& a, const std::map<std::string, std::vector<float>>& originals,
                                           int k, int rank, int group_size) {
  std::vector<size_t> index;
  std::vector<double> norms;
  std::vector<std::vector<float>> errors;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    StoredTensor& t = a.tensors[i];
    auto it = originals.find(t.name);
    if (t.kind != StorageKind::IntRow || it == originals.end()) continue;
    PG_CHECK(static_cast<int64_t>(it->second.size()) == t.numel(), "LQER: original of '{}' has {} values, tensor {}",
             t.name, it->second.size(), t.numel());
    t.lqer.reset();
    const std::vector<float> deq = dequantize(t);
    std::vector<float> err(deq.size());
    double n2 = 0;
    for (size_t j = 0; j < deq.size(); ++j) {
      err[j] = it->second[j] - deq[j];
      n2 += static_cast<double>(err[j]) * err[j];
    }
    index.push_back(i);
    norms.push_back(std::sqrt(n2));
    errors.push_back(std::move(err));
  }
  std::vector<std::string> names;
  for (size_t w : quant::lqer_pick_worst(norms, k)) {
    StoredTensor& t = a.tensors[index[w]];
    const int r = static_cast<int>(std::min<int64_t>(rank, std::min(t.q.rows, t.q.cols)));
    t.lqer = quant::lqer_fit(errors[w], t.q.rows, t.q.cols, r, group_size);
    names.push_back(t.name);
  }
  return names;
}

}  // namespace pgolf::artifact
