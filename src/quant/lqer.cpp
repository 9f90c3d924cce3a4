#include "quant/lqer.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quantize.h"

namespace pgolf::quant {

namespace {

uint16_t positive_f16(double s) {
  uint16_t h = f32_to_f16_bits(static_cast<float>(std::min(s, 65504.0)));
  if (!(f16_bits_to_f32(h) > 0.f)) h = 0x0001;  // smallest positive fp16: all-zero factor stays zero
  return h;
}

int8_t clamp_code(double x, int lo, int hi) {
  double r = std::nearbyint(x);
  if (!(r >= lo)) r = lo;  // also maps NaN to lo, which validate() accepts; inputs are finite in practice
  if (r > hi) r = hi;
  return static_cast<int8_t>(r);
}

}  // namespace

int64_t LowRankCorrection::num_groups(int rank, int64_t cols, int group_size) {
  PG_CHECK(group_size > 0, "LQER: group size must be > 0, got {}", group_size);
  return (static_cast<int64_t>(rank) * cols + group_size - 1) / group_size;
}

void LowRankCorrection::validate(const std::string& what) const {
  PG_CHECK(rows > 0 && cols > 0 && rank > 0, "{}: LQER shape ({}, {}) rank {} invalid", what, rows, cols, rank);
  PG_CHECK(static_cast<int64_t>(a_codes.size()) == rows * rank, "{}: LQER A has {} codes, expected {}x{}", what,
           a_codes.size(), rows, rank);
  PG_CHECK(static_cast<int64_t>(b_codes.size()) == rank * cols, "{}: LQER B has {} codes, expected {}x{}", what,
           b_codes.size(), rank, cols);
  PG_CHECK(static_cast<int64_t>(b_scales.size()) == num_groups(rank, cols, group_size),
           "{}: LQER B has {} group scales, expected {}", what, b_scales.size(), num_groups(rank, cols, group_size));
  for (int8_t c : a_codes) PG_CHECK(c >= -2 && c <= 1, "{}: LQER A code {} outside [-2, 1]", what, int{c});
  for (int8_t c : b_codes) PG_CHECK(c >= -8 && c <= 7, "{}: LQER B code {} outside [-8, 7]", what, int{c});
  auto ok = [](uint16_t h) { const float s = f16_bits_to_f32(h); return std::isfinite(s) && s > 0.f; };
  PG_CHECK(ok(a_scale), "{}: LQER A scale is not finite and positive", what);
  for (uint16_t h : b_scales) PG_CHECK(ok(h), "{}: LQER B group scale is not finite and positive", what);
}

void LowRankCorrection::add_to(std::span<float> w) const {
  PG_CHECK(static_cast<int64_t>(w.size()) == rows * cols, "LQER add_to: {} values for ({}, {})", w.size(), rows, cols);
  const float sa = f16_bits_to_f32(a_scale);
  std::vector<float> b(b_codes.size());  // dequantized B (rank, cols)
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = static_cast<float>(b_codes[i]) * f16_bits_to_f32(b_scales[i / static_cast<size_t>(group_size)]);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      float acc = 0.f;
      for (int r = 0; r < rank; ++r)
        acc += (static_cast<float>(a_codes[static_cast<size_t>(i * rank + r)]) * sa) * b[static_cast<size_t>(r * cols + j)];
      w[static_cast<size_t>(i * cols + j)] += acc;
    }
  }
}

LowRankCorrection lqer_fit(std::span<const float> err, int64_t rows, int64_t cols, int rank, int group_size) {
  PG_CHECK(rows > 0 && cols > 0 && static_cast<int64_t>(err.size()) == rows * cols,
           "lqer_fit: {} values for a ({}, {}) error matrix", err.size(), rows, cols);
  PG_CHECK(rank > 0 && rank <= std::min(rows, cols), "lqer_fit: rank {} must be in [1, min({}, {})]", rank, rows, cols);
  const int64_t m = std::min(rows, cols);
  std::vector<double> a(err.begin(), err.end()), s(static_cast<size_t>(m)), u(static_cast<size_t>(rows * m)),
      vt(static_cast<size_t>(m * cols));
  const lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(rows),
                                         static_cast<lapack_int>(cols), a.data(), static_cast<lapack_int>(cols),
                                         s.data(), u.data(), static_cast<lapack_int>(m), vt.data(),
                                         static_cast<lapack_int>(cols));
  PG_CHECK(info == 0, "lqer_fit: SVD of the ({}, {}) error failed (LAPACKE_dgesdd info {})", rows, cols, info);

  LowRankCorrection c;
  c.rows = rows;
  c.cols = cols;
  c.rank = rank;
  c.group_size = group_size;
  std::vector<double> fa(static_cast<size_t>(rows * rank));  // U_r S_r
  double amax = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int r = 0; r < rank; ++r) {
      const double v = u[static_cast<size_t>(i * m + r)] * s[static_cast<size_t>(r)];
      fa[static_cast<size_t>(i * rank + r)] = v;
      amax = std::max(amax, std::fabs(v));
    }
  c.a_scale = positive_f16(amax / 1.5);
  const double sa = f16_bits_to_f32(c.a_scale);
  c.a_codes.resize(fa.size());
  for (size_t i = 0; i < fa.size(); ++i) c.a_codes[i] = clamp_code(fa[i] / sa, -2, 1);

  const int64_t nb = static_cast<int64_t>(rank) * cols;
  c.b_codes.resize(static_cast<size_t>(nb));
  c.b_scales.resize(static_cast<size_t>(LowRankCorrection::num_groups(rank, cols, group_size)));
  for (int64_t g0 = 0, g = 0; g0 < nb; g0 += group_size, ++g) {
    const int64_t g1 = std::min<int64_t>(g0 + group_size, nb);
    double bmax = 0;
    for (int64_t i = g0; i < g1; ++i) bmax = std::max(bmax, std::fabs(vt[static_cast<size_t>(i)]));  // VT rows 0..rank-1
    c.b_scales[static_cast<size_t>(g)] = positive_f16(bmax / 7.5);
    const double sb = f16_bits_to_f32(c.b_scales[static_cast<size_t>(g)]);
    for (int64_t i = g0; i < g1; ++i) c.b_codes[static_cast<size_t>(i)] = clamp_code(vt[static_cast<size_t>(i)] / sb, -8, 7);
  }
  return c;
}

std::vector<size_t> lqer_pick_worst(std::span<const double> error_norms, int k) {
  std::vector<size_t> idx(error_norms.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return error_norms[a] > error_norms[b]; });
  idx.resize(std::min(idx.size(), static_cast<size_t>(std::max(k, 0))));
  return idx;
}

}  // namespace pgolf::quant
