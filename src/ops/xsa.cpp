#include "ops/xsa.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// The unit value vector of one (row, kv head) into vh; returns the clamped norm.
template <class S, class E>
S unit_value(const E* v, int64_t D, S* vh, bool* clamped) {
  S ss = 0;
  for (int64_t d = 0; d < D; ++d) ss += ld<S>(v[d]) * ld<S>(v[d]);
  const S raw = std::sqrt(ss), n = raw > S(kXsaNormEps) ? raw : S(kXsaNormEps);
  *clamped = !(raw > S(kXsaNormEps));
  for (int64_t d = 0; d < D; ++d) vh[d] = ld<S>(v[d]) / n;
  return n;
}

// rows = B*T. out may alias y: each head row is read fully before it is written.
template <class S, class E>
void xsa_fwd_kernel(const E* y, const E* v, E* out, int64_t rows, int64_t Hq, int64_t Hkv, int64_t D) {
  const int64_t G = Hq / Hkv;
  std::vector<S> vh(static_cast<size_t>(D));
  bool clamped = false;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t kv = 0; kv < Hkv; ++kv) {
      unit_value<S>(v + (r * Hkv + kv) * D, D, vh.data(), &clamped);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t o = (r * Hq + kv * G + g) * D;
        S a = 0;
        for (int64_t d = 0; d < D; ++d) a += ld<S>(y[o + d]) * vh[d];
        for (int64_t d = 0; d < D; ++d) st(out[o + d], ld<S>(y[o + d]) - a * vh[d]);
      }
    }
}

// dy may alias dout (each element is read before it is written).
template <class S, class E>
void xsa_bwd_kernel(const E* y, const E* v, const E* dout, E* dy, E* dv, int64_t rows, int64_t Hq, int64_t Hkv,
                    int64_t D) {
  const int64_t G = Hq / Hkv;
  std::vector<S> vh(static_cast<size_t>(D)), dvh(static_cast<size_t>(D));
  bool clamped = false;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t kv = 0; kv < Hkv; ++kv) {
      const S n = unit_value<S>(v + (r * Hkv + kv) * D, D, vh.data(), &clamped);
      std::fill(dvh.begin(), dvh.end(), S(0));
      for (int64_t g = 0; g < G; ++g) {
        const int64_t o = (r * Hq + kv * G + g) * D;
        S a = 0, b = 0;  // y . vh, dout . vh
        for (int64_t d = 0; d < D; ++d) {
          a += ld<S>(y[o + d]) * vh[d];
          b += ld<S>(dout[o + d]) * vh[d];
        }
        for (int64_t d = 0; d < D; ++d) {
          const S go = ld<S>(dout[o + d]);
          dvh[d] -= a * go + b * ld<S>(y[o + d]);
          st(dy[o + d], go - b * vh[d]);
        }
      }
      S c = 0;  // vh . dvh (the normalization's radial part; absent when the norm is clamped)
      if (!clamped)
        for (int64_t d = 0; d < D; ++d) c += vh[d] * dvh[d];
      E* dvr = dv + (r * Hkv + kv) * D;
      for (int64_t d = 0; d < D; ++d) st(dvr[d], (dvh[d] - vh[d] * c) / n);
    }
}

struct XsaDims {
  int64_t rows, Hq, Hkv, D;
};

XsaDims check_xsa(const char* op, const Tensor& y, const Tensor& v) {
  cpu::check_fb(op, "y", y);
  cpu::check_fb(op, "v", v);
  check_ndim(op, "y", y, 4);
  check_ndim(op, "v", v, 4);
  PG_CHECK(v.dtype() == y.dtype(), "{}: v {} and y {} must have the same dtype", op, v.desc(), y.desc());
  const int64_t B = y.dim(0), T = y.dim(1), Hq = y.dim(2), D = y.dim(3), Hkv = v.dim(2);
  PG_CHECK(v.dim(0) == B && v.dim(1) == T && v.dim(3) == D && Hkv > 0 && Hq % Hkv == 0,
           "{}: v {} does not fit y {} (need (B, T, Hkv, D) with Hq % Hkv == 0)", op, v.desc(), y.desc());
  return XsaDims{B * T, Hq, Hkv, D};
}

void check_like(const char* op, const char* name, const Tensor& t, const char* ref_name, const Tensor& ref) {
  check_defined(op, name, t);
  PG_CHECK(t.dtype() == ref.dtype() && t.shape() == ref.shape(), "{}: {} {} must match {} {}", op, name, t.desc(),
           ref_name, ref.desc());
}

}  // namespace

void xsa_forward(const Tensor& y, const Tensor& v, const Tensor& out) {
  const char* op = "xsa_forward";
  const XsaDims d = check_xsa(op, y, v);
  check_like(op, "out", out, "y", y);
  if (check_same_device(op, {&y, &v, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::xsa_forward(y, v, out));
    return;
  }
  cpu::visit_fb(op, "y", y, [&](auto* yp) {
    using E = std::remove_pointer_t<decltype(yp)>;
    xsa_fwd_kernel<float>(yp, static_cast<const E*>(v.data()), static_cast<E*>(out.data()), d.rows, d.Hq, d.Hkv,
                          d.D);
  });
}

void xsa_backward(const Tensor& y, const Tensor& v, const Tensor& dout, const Tensor& dy, const Tensor& dv) {
  const char* op = "xsa_backward";
  const XsaDims d = check_xsa(op, y, v);
  check_like(op, "dout", dout, "y", y);
  check_like(op, "dy", dy, "y", y);
  check_like(op, "dv", dv, "v", v);
  if (check_same_device(op, {&y, &v, &dout, &dy, &dv}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::xsa_backward(y, v, dout, dy, dv));
    return;
  }
  cpu::visit_fb(op, "y", y, [&](auto* yp) {
    using E = std::remove_pointer_t<decltype(yp)>;
    xsa_bwd_kernel<float>(yp, static_cast<const E*>(v.data()), static_cast<const E*>(dout.data()),
                          static_cast<E*>(dy.data()), static_cast<E*>(dv.data()), d.rows, d.Hq, d.Hkv, d.D);
  });
}

namespace ref {
void xsa_forward(const double* y, const double* v, double* out, int64_t rows, int64_t Hq, int64_t Hkv, int64_t D) {
  xsa_fwd_kernel<double>(y, v, out, rows, Hq, Hkv, D);
}
void xsa_backward(const double* y, const double* v, const double* dout, double* dy, double* dv, int64_t rows,
                  int64_t Hq, int64_t Hkv, int64_t D) {
  xsa_bwd_kernel<double>(y, v, dout, dy, dv, rows, Hq, Hkv, D);
}
}  // namespace ref

}  // namespace pgolf::ops
