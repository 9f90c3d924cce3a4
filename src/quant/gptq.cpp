#include "quant/gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace pgolf::quant {

namespace {

constexpr int64_t kAccumulateChunkRows = 256;

double mean_diag(const std::vector<double>& h, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += h[static_cast<size_t>(i * n + i)];
  return n ? s / static_cast<double>(n) : 0.0;
}

void add_to_diag(std::vector<double>& h, int64_t n, double v) {
  for (int64_t i = 0; i < n; ++i) h[static_cast<size_t>(i * n + i)] += v;
}

void symmetrize(std::vector<double>& h, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double m = 0.5 * (h[static_cast<size_t>(i * n + j)] + h[static_cast<size_t>(j * n + i)]);
      h[static_cast<size_t>(i * n + j)] = m;
      h[static_cast<size_t>(j * n + i)] = m;
    }
}

// Lower Cholesky in place (row-major); false when not positive definite.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  return LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', static_cast<lapack_int>(n), a.data(), static_cast<lapack_int>(n)) == 0;
}

// H = V max(Λ, floor) Vᵀ, symmetrized. Returns how many eigenvalues were raised.
int64_t eigen_clamp(std::vector<double>& h, int64_t n, double floor) {
  std::vector<double> v = h;  // dsyevd overwrites with eigenvectors (columns, row-major storage)
  std::vector<double> lambda(static_cast<size_t>(n));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', static_cast<lapack_int>(n), v.data(),
                                         static_cast<lapack_int>(n), lambda.data());
  PG_CHECK(info == 0, "GPTQ Hessian repair: eigendecomposition of the ({}, {}) Hessian failed (LAPACKE_dsyevd info {})",
           n, n, info);
  int64_t clamped = 0;
  for (double& l : lambda)
    if (!(l >= floor)) {
      l = floor;
      ++clamped;
    }
  // h = (V Λ) Vᵀ
  std::vector<double> vl = v;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k) vl[static_cast<size_t>(i * n + k)] *= lambda[static_cast<size_t>(k)];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(n), static_cast<int>(n),
              1.0, vl.data(), static_cast<int>(n), v.data(), static_cast<int>(n), 0.0, h.data(), static_cast<int>(n));
  symmetrize(h, n);
  return clamped;
}

}  // namespace

// ---------------------------------------------------------------- HessianAccumulator

HessianAccumulator::HessianAccumulator(int64_t cols) : cols_(cols) {
  PG_CHECK(cols > 0, "HessianAccumulator: cols must be > 0, got {}", cols);
  sum_.assign(static_cast<size_t>(cols * cols), 0.0);
}

void HessianAccumulator::add(std::span<const float> x, int64_t n_rows) {
  PG_CHECK(n_rows >= 0 && static_cast<int64_t>(x.size()) == n_rows * cols_,
           "HessianAccumulator::add: {} values for ({}, {}) activations", x.size(), n_rows, cols_);
  for (int64_t r0 = 0; r0 < n_rows; r0 += kAccumulateChunkRows) {
    const int64_t k = std::min(kAccumulateChunkRows, n_rows - r0);
    scratch_.resize(static_cast<size_t>(k * cols_));
    for (int64_t i = 0; i < k * cols_; ++i) scratch_[static_cast<size_t>(i)] = x[static_cast<size_t>(r0 * cols_ + i)];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols_), static_cast<int>(k), 1.0,
                scratch_.data(), static_cast<int>(cols_), 1.0, sum_.data(), static_cast<int>(cols_));
  }
  rows_seen_ += n_rows;
}

void HessianAccumulator::merge(const HessianAccumulator& other) {
  PG_CHECK(other.cols_ == cols_, "HessianAccumulator::merge: {} vs {} columns", other.cols_, cols_);
  for (size_t i = 0; i < sum_.size(); ++i) sum_[i] += other.sum_[i];
  rows_seen_ += other.rows_seen_;
}

std::vector<double> HessianAccumulator::hessian() const {
  PG_CHECK(rows_seen_ > 0, "HessianAccumulator: no activation rows were accumulated ({} columns)", cols_);
  std::vector<double> h(sum_.size());
  const double inv = 1.0 / static_cast<double>(rows_seen_);
  for (int64_t i = 0; i < cols_; ++i)
    for (int64_t j = i; j < cols_; ++j) {
      const double v = sum_[static_cast<size_t>(i * cols_ + j)] * inv;
      h[static_cast<size_t>(i * cols_ + j)] = v;
      h[static_cast<size_t>(j * cols_ + i)] = v;
    }
  return h;
}

// ---------------------------------------------------------------- Hessian factorization

std::vector<double> inverse_cholesky_upper(std::vector<double> h, int64_t n, double damp_percent,
                                           GptqReport* report) {
  PG_CHECK(static_cast<int64_t>(h.size()) == n * n, "GPTQ: Hessian has {} values, expected ({}, {})", h.size(), n, n);
  for (double v : h) PG_CHECK(std::isfinite(v), "GPTQ: the ({}, {}) Hessian contains a non-finite value", n, n);
  symmetrize(h, n);
  const double md = mean_diag(h, n);
  PG_CHECK(md > 0, "GPTQ: mean Hessian diagonal is {} (expected > 0 after dead-column handling)", md);
  add_to_diag(h, n, damp_percent * md);

  std::vector<double> l = h;
  bool ok = cholesky_lower(l, n);
  for (int a = 0; !ok && a < 4; ++a) {
    l = h;
    add_to_diag(l, n, 0.1 * std::pow(10.0, a) * md);
    ok = cholesky_lower(l, n);
    if (report) report->extra_damping_tries = a + 1;
  }
  if (!ok) {
    l = h;
    const int64_t clamped = eigen_clamp(l, n, 1e-6 * md);
    if (report) {
      report->eigen_repaired = true;
      report->eigen_clamped = clamped;
    }
    ok = cholesky_lower(l, n);
    PG_CHECK(ok, "GPTQ: the ({}, {}) Hessian is not positive definite even after eigenvalue repair", n, n);
  }
  // H⁻¹ from its Cholesky factor, then the upper factor of H⁻¹.
  lapack_int info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', static_cast<lapack_int>(n), l.data(),
                                   static_cast<lapack_int>(n));
  PG_CHECK(info == 0, "GPTQ: inverting the ({}, {}) Hessian failed (LAPACKE_dpotri info {})", n, n, info);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) l[static_cast<size_t>(i * n + j)] = l[static_cast<size_t>(j * n + i)];
  info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', static_cast<lapack_int>(n), l.data(), static_cast<lapack_int>(n));
  PG_CHECK(info == 0, "GPTQ: Cholesky of the inverse ({}, {}) Hessian failed (LAPACKE_dpotrf info {})", n, n, info);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) l[static_cast<size_t>(i * n + j)] = 0.0;
  return l;
}

// ---------------------------------------------------------------- GPTQ

double hessian_weighted_error(std::span<const float> w, std::span<const float> deq, int64_t rows, int64_t cols,
                              std::span<const double> hessian) {
  PG_CHECK(static_cast<int64_t>(w.size()) == rows * cols && deq.size() == w.size(),
           "hessian_weighted_error: sizes {} / {} for ({}, {})", w.size(), deq.size(), rows, cols);
  PG_CHECK(static_cast<int64_t>(hessian.size()) == cols * cols, "hessian_weighted_error: Hessian has {} values for {}",
           hessian.size(), cols);
  if (rows == 0 || cols == 0) return 0.0;
  std::vector<double> e(w.size()), eh(w.size());
  for (size_t i = 0; i < w.size(); ++i) e[i] = static_cast<double>(w[i]) - static_cast<double>(deq[i]);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, e.data(), static_cast<int>(cols), hessian.data(), static_cast<int>(cols), 0.0,
              eh.data(), static_cast<int>(cols));
  double s = 0;
  for (size_t i = 0; i < e.size(); ++i) s += e[i] * eh[i];
  return s;
}

QuantizedMatrix gptq_quantize(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> hessian,
                              const GptqOptions& opt, GptqReport* report, const std::vector<uint16_t>* scales) {
  PG_CHECK(rows > 0 && cols > 0 && static_cast<int64_t>(w.size()) == rows * cols,
           "gptq_quantize: {} values for a ({}, {}) weight", w.size(), rows, cols);
  PG_CHECK(static_cast<int64_t>(hessian.size()) == cols * cols,
           "gptq_quantize: Hessian has {} values, expected ({}, {}) for a ({}, {}) weight", hessian.size(), cols, cols,
           rows, cols);
  PG_CHECK(opt.block_size > 0, "gptq_quantize: block size must be > 0, got {}", opt.block_size);
  const int qm = qmax_for_bits(opt.bits);
  GptqReport local;
  GptqReport& rep = report ? *report : local;
  rep = GptqReport{};

  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.bits = opt.bits;
  if (scales) {
    PG_CHECK(static_cast<int64_t>(scales->size()) == rows, "gptq_quantize: {} scales for {} rows", scales->size(), rows);
    q.scales = *scales;
  } else {
    q.scales = scales_from_clips(row_clips(w, rows, cols, opt.clip), opt.bits, opt.min_scale);
  }

  // Dead columns (no activation energy): quantize them as zero and keep H invertible.
  std::vector<double> h(hessian.begin(), hessian.end());
  std::vector<bool> dead(static_cast<size_t>(cols), false);
  for (int64_t j = 0; j < cols; ++j) {
    if (h[static_cast<size_t>(j * cols + j)] <= 0.0) {
      dead[static_cast<size_t>(j)] = true;
      ++rep.dead_columns;
      for (int64_t k = 0; k < cols; ++k) {
        h[static_cast<size_t>(j * cols + k)] = 0.0;
        h[static_cast<size_t>(k * cols + j)] = 0.0;
      }
      h[static_cast<size_t>(j * cols + j)] = 1.0;
    }
  }

  // Column order: descending diag(H) ("act-order"); stable so ties keep their index order.
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return h[static_cast<size_t>(a * cols + a)] > h[static_cast<size_t>(b * cols + b)];
    });
  std::vector<double> hp(h.size());
  for (int64_t a = 0; a < cols; ++a)
    for (int64_t b = 0; b < cols; ++b)
      hp[static_cast<size_t>(a * cols + b)] = h[static_cast<size_t>(perm[a] * cols + perm[b])];
  const std::vector<double> u = inverse_cholesky_upper(std::move(hp), cols, opt.damp_percent, &rep);

  // Work on Wᵀ (cols, rows) so each column of W is contiguous.
  std::vector<double> wt(static_cast<size_t>(cols * rows));
  for (int64_t p = 0; p < cols; ++p) {
    const int64_t j = perm[static_cast<size_t>(p)];
    for (int64_t r = 0; r < rows; ++r)
      wt[static_cast<size_t>(p * rows + r)] = dead[static_cast<size_t>(j)] ? 0.0 : w[static_cast<size_t>(r * cols + j)];
  }
  std::vector<double> s(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) s[static_cast<size_t>(r)] = q.scale(r);
  std::vector<int8_t> codes_t(static_cast<size_t>(cols * rows));
  std::vector<double> err(static_cast<size_t>(opt.block_size) * static_cast<size_t>(rows));

  for (int64_t b0 = 0; b0 < cols; b0 += opt.block_size) {
    const int64_t be = std::min<int64_t>(b0 + opt.block_size, cols);
    for (int64_t j = b0; j < be; ++j) {
      double* wj = &wt[static_cast<size_t>(j * rows)];
      double* ej = &err[static_cast<size_t>((j - b0) * rows)];
      const double d = u[static_cast<size_t>(j * cols + j)];
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t c = quantize_value(wj[r], s[static_cast<size_t>(r)], qm);
        codes_t[static_cast<size_t>(j * rows + r)] = c;
        ej[r] = (wj[r] - static_cast<double>(c) * s[static_cast<size_t>(r)]) / d;
      }
      for (int64_t k = j + 1; k < be; ++k) {
        const double ujk = u[static_cast<size_t>(j * cols + k)];
        double* wk = &wt[static_cast<size_t>(k * rows)];
        for (int64_t r = 0; r < rows; ++r) wk[r] -= ujk * ej[r];
      }
    }
    if (be < cols) {  // lazy batch update of all later columns: W[:, be:] -= Err · U[b0:be, be:]
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(cols - be), static_cast<int>(rows),
                  static_cast<int>(be - b0), -1.0, &u[static_cast<size_t>(b0 * cols + be)], static_cast<int>(cols),
                  err.data(), static_cast<int>(rows), 1.0, &wt[static_cast<size_t>(be * rows)], static_cast<int>(rows));
    }
  }

  q.codes.resize(static_cast<size_t>(rows * cols));
  for (int64_t p = 0; p < cols; ++p) {
    const int64_t j = perm[static_cast<size_t>(p)];
    for (int64_t r = 0; r < rows; ++r)
      q.codes[static_cast<size_t>(r * cols + j)] = codes_t[static_cast<size_t>(p * rows + r)];
  }
  if (report) {
    const std::vector<float> deq = dequantize(q);
    report->proxy_error = hessian_weighted_error(w, deq, rows, cols, hessian);
  }
  return q;
}

GptqSearchResult gptq_clip_search(std::span<const float> w, int64_t rows, int64_t cols,
                                  std::span<const double> hessian, const GptqOptions& options,
                                  std::span<const ClipRule> candidates) {
  PG_CHECK(!candidates.empty(), "gptq_clip_search: no clip candidates");
  GptqSearchResult best;
  bool have = false;
  for (const ClipRule& rule : candidates) {
    GptqOptions o = options;
    o.clip = rule;
    GptqReport rep;
    QuantizedMatrix q = gptq_quantize(w, rows, cols, hessian, o, &rep);
    if (!have || rep.proxy_error < best.report.proxy_error) {
      best = GptqSearchResult{rule, std::move(q), rep};
      have = true;
    }
  }
  return best;
}

}  // namespace pgolf::quant
