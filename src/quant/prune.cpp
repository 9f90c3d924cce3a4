#include "quant/prune.h"

#include <algorithm>

#include "core/error.h"

namespace pgolf::quant {

std::vector<PruneCandidate> prune_candidates(const std::vector<QuantizedMatrix*>& matrices) {
  std::vector<PruneCandidate> c;
  for (uint32_t m = 0; m < matrices.size(); ++m) {
    const QuantizedMatrix& q = *matrices[m];
    PG_CHECK(static_cast<int64_t>(q.codes.size()) == q.rows * q.cols && static_cast<int64_t>(q.scales.size()) == q.rows,
             "prune_candidates: matrix {} is inconsistent ({} codes, {} scales for ({}, {}))", m, q.codes.size(),
             q.scales.size(), q.rows, q.cols);
    for (int64_t r = 0; r < q.rows; ++r) {
      const float s = q.scale(r);
      for (int64_t col = 0; col < q.cols; ++col) {
        const uint64_t i = static_cast<uint64_t>(r * q.cols + col);
        const int8_t v = q.codes[i];
        if (v == 1 || v == -1) c.push_back({m, i, s * s, v});
      }
    }
  }
  std::stable_sort(c.begin(), c.end(), [](const PruneCandidate& a, const PruneCandidate& b) { return a.cost < b.cost; });
  return c;
}

void apply_prune(const std::vector<QuantizedMatrix*>& matrices, const std::vector<PruneCandidate>& candidates, size_t n) {
  PG_CHECK(n <= candidates.size(), "apply_prune: {} of {} candidates", n, candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const PruneCandidate& c = candidates[i];
    PG_CHECK(c.matrix < matrices.size() && c.index < matrices[c.matrix]->codes.size(),
             "apply_prune: candidate {} points outside the matrices", i);
    matrices[c.matrix]->codes[c.index] = i < n ? int8_t{0} : c.sign;
  }
}

PruneResult prune_to_budget(const std::vector<QuantizedMatrix*>& matrices, const std::function<uint64_t()>& size_fn,
                            uint64_t target_bytes) {
  const std::vector<PruneCandidate> cands = prune_candidates(matrices);
  PruneResult res;
  res.candidates = cands.size();
  auto size_at = [&](size_t n) {
    apply_prune(matrices, cands, n);
    ++res.evaluations;
    return size_fn();
  };
  const uint64_t unpruned = size_at(0);
  if (unpruned <= target_bytes) {
    res.reached = true;
    res.bytes = unpruned;
    return res;
  }
  const uint64_t all = size_at(cands.size());
  if (all > target_bytes) {
    apply_prune(matrices, cands, 0);
    res.bytes = unpruned;
    return res;
  }
  // Invariant: size(lo) > target, size(hi) <= target.
  size_t lo = 0, hi = cands.size();
  uint64_t hi_bytes = all;
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    const uint64_t b = size_at(mid);
    if (b <= target_bytes) {
      hi = mid;
      hi_bytes = b;
    } else {
      lo = mid;
    }
  }
  apply_prune(matrices, cands, hi);
  res.reached = true;
  res.pruned = hi;
  res.bytes = hi_bytes;
  for (size_t i = 0; i < hi; ++i) res.added_error += cands[i].cost;
  return res;
}

}  // namespace pgolf::quant
