#pragma once
// Full-Hessian GPTQ (TECHNIQUES.md §7.5) with the eigendecomposition Hessian repair (§7.6).
// Host code, double precision throughout; LAPACKE for the factorizations, CBLAS for the lazy
// block updates.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "quant/quantize.h"

namespace pgolf::quant {

// Accumulates H = Σ XᵀX over activation rows X (n, cols) in double. hessian() returns the sum
// divided by the number of rows seen (the scale does not change GPTQ: damping is relative).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t cols);
  void add(std::span<const float> x, int64_t n_rows);  // x: (n_rows, cols) row-major
  void merge(const HessianAccumulator& other);          // e.g. from another rank or calibration source
  int64_t cols() const { return cols_; }
  int64_t rows_seen() const { return rows_seen_; }
  std::vector<double> hessian() const;     // (cols, cols) row-major, symmetric
  const std::vector<double>& sum() const { return sum_; }

 private:
  int64_t cols_;
  int64_t rows_seen_ = 0;
  std::vector<double> sum_;  // (cols, cols); only the upper triangle is accumulated until hessian()
  std::vector<double> scratch_;
};

struct GptqOptions {
  int bits = 6;
  double damp_percent = 0.01;  // H += damp_percent · mean(diag H) · I
  int block_size = 128;
  bool act_order = true;       // process columns by descending diag(H)
  ClipRule clip = ClipRule::sd(12.85);
  float min_scale = 0.f;
};

// What happened to the Hessian on the way to a Cholesky factor.
struct GptqReport {
  int64_t dead_columns = 0;    // diag <= 0: column zeroed, diag set to 1
  int extra_damping_tries = 0; // 0 when the plainly damped H was positive definite
  bool eigen_repaired = false; // eigenvalues were clamped
  int64_t eigen_clamped = 0;   // how many eigenvalues were raised
  double proxy_error = 0;      // tr((W-Q) H (W-Q)ᵀ) with the caller's (undamped) H
};

// GPTQ of W (rows, cols) with H (cols, cols). Scales come from options.clip on the original W
// unless `scales` (rows fp16 values) is given.
QuantizedMatrix gptq_quantize(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> hessian,
                              const GptqOptions& options, GptqReport* report = nullptr,
                              const std::vector<uint16_t>* scales = nullptr);

// GPTQ with a clip search: runs GPTQ once per candidate rule and keeps the lowest proxy error.
struct GptqSearchResult {
  ClipRule rule;
  QuantizedMatrix q;
  GptqReport report;
};
GptqSearchResult gptq_clip_search(std::span<const float> w, int64_t rows, int64_t cols,
                                  std::span<const double> hessian, const GptqOptions& options,
                                  std::span<const ClipRule> candidates);

// tr(E H Eᵀ) for E = W - deq: equals ||(W - Q) Xᵀ||² when H = XᵀX.
double hessian_weighted_error(std::span<const float> w, std::span<const float> deq, int64_t rows, int64_t cols,
                              std::span<const double> hessian);

// Makes H (n, n, row-major) positive definite and returns the upper Cholesky factor U of H⁻¹
// (H⁻¹ = UᵀU). H is symmetrized, damped and, if needed, repaired as in §7.6. Exposed for tests.
std::vector<double> inverse_cholesky_upper(std::vector<double> h, int64_t n, double damp_percent, GptqReport* report);

}  // namespace pgolf::quant
