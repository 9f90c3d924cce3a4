#pragma once
// Shared helpers of the op tests: random tensors in f32/bf16, double read-back, closeness checks
// and central finite differences on double-precision reference kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pgolf::testing {

inline std::vector<double> randn(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// A CPU tensor of `dtype` holding `v` (rounded to bf16 when dtype is BF16).
inline Tensor make_tensor(const std::vector<double>& v, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  EXPECT_EQ(static_cast<int64_t>(v.size()), shape.numel());
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32) t.ptr<float>()[i] = static_cast<float>(v[i]);
    else t.ptr<bf16>()[i] = f32_to_bf16(static_cast<float>(v[i]));
  }
  return t;
}

inline Tensor rand_tensor(const Shape& shape, DType dtype, uint32_t seed, double scale = 1.0) {
  return make_tensor(randn(static_cast<size_t>(shape.numel()), seed, scale), shape, dtype);
}

inline std::vector<double> to_d(const Tensor& t) {
  std::vector<float> f = t.to_float_vector();
  return std::vector<double>(f.begin(), f.end());
}

inline double tol_for(DType t) { return t == DType::BF16 ? 1e-2 : 1e-5; }

// Every element: |got - want| <= tol * (1 + |want|).
inline void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol * (1.0 + std::fabs(want[i])))) {
      if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of loss(x) with respect to every element of x, compared with `grad`.
// The relative error is measured against the largest gradient magnitude so near-zero entries
// do not dominate.
inline void expect_grad_matches_fd(const std::function<double(const std::vector<double>&)>& loss,
                                   std::vector<double> x, const std::vector<double>& grad, const std::string& what,
                                   double eps = 1e-6, double rtol = 1e-6) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  double gmax = 1e-12;
  for (double g : grad) gmax = std::max(gmax, std::fabs(g));
  int bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double x0 = x[i];
    x[i] = x0 + eps;
    double lp = loss(x);
    x[i] = x0 - eps;
    double lm = loss(x);
    x[i] = x0;
    double fd = (lp - lm) / (2 * eps);
    if (!(std::fabs(fd - grad[i]) <= rtol * gmax + 1e-9 * std::fabs(fd))) {
      if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: analytic " << grad[i] << ", finite diff " << fd;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << x.size() << " gradient entries differ";
}

// EXPECT that `fn` throws pgolf::Error whose message contains `needle` (the op name).
template <class Fn> void expect_error_naming(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a pgolf::Error naming " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace pgolf::testing
