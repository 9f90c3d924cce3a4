#include "ops/lerp_gate.h"

#include <cmath>
#include <type_traits>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

template <class S> S sigmoid(S z) { return S(1) / (S(1) + std::exp(-z)); }

template <class S, class X, class Y, class O>
void fwd(S a, const X* x, const Y* y, O* out, int64_t n) {
  const S s = sigmoid<S>(a);
  for (int64_t i = 0; i < n; ++i) st(out[i], (S(1) - s) * ld<S>(x[i]) + s * ld<S>(y[i]));
}

template <class S, class X, class Y, class G>
S bwd(S a, const X* x, const Y* y, const G* dout, X* dx, Y* dy, int64_t n) {
  const S s = sigmoid<S>(a);
  S acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const S g = ld<S>(dout[i]);
    acc += g * (ld<S>(y[i]) - ld<S>(x[i]));
    if (dx != nullptr) st(dx[i], (S(1) - s) * g);
    if (dy != nullptr) st(dy[i], s * g);
  }
  return s * (S(1) - s) * acc;
}

void check_args(const char* op, const Tensor& a, const Tensor& x, const Tensor& y) {
  cpu::check_f32(op, "a", a);
  check_shape(op, "a", a, Shape{1});
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "y", y);
  cpu::check_same_numel(op, "x", x, "y", y);
}

void check_grad(const char* op, const char* name, const Tensor& g, const char* ref_name, const Tensor& ref) {
  if (!g.defined()) return;
  PG_CHECK(g.dtype() == ref.dtype() && g.numel() == ref.numel(), "{}: {} {} must match {} {}", op, name, g.desc(),
           ref_name, ref.desc());
}

}  // namespace

void sigmoid_lerp_forward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& out) {
  const char* op = "sigmoid_lerp_forward";
  check_args(op, a, x, y);
  cpu::check_fb(op, "out", out);
  cpu::check_same_numel(op, "out", out, "x", x);
  PG_CHECK(x.numel() == 0 || (out.data() != x.data() && out.data() != y.data()), "{}: out must not alias x or y", op);
  if (check_same_device(op, {&a, &x, &y, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sigmoid_lerp_forward(a, x, y, out));
    return;
  }
  const float av = a.ptr<float>()[0];
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      cpu::visit_fb(op, "out", out, [&](auto* op_) { fwd<float>(av, xp, yp, op_, x.numel()); });
    });
  });
}

void sigmoid_lerp_backward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& dout, const Tensor& dx,
                           const Tensor& dy, const Tensor& da) {
  const char* op = "sigmoid_lerp_backward";
  check_args(op, a, x, y);
  cpu::check_fb(op, "dout", dout);
  cpu::check_same_numel(op, "dout", dout, "x", x);
  check_grad(op, "dx", dx, "x", x);
  check_grad(op, "dy", dy, "y", y);
  cpu::check_f32(op, "da", da);
  check_shape(op, "da", da, Shape{1});
  Device dev = check_same_device(op, {&a, &x, &y, &dout, &da});
  if (dx.defined()) check_same_device(op, {&x, &dx});
  if (dy.defined()) check_same_device(op, {&y, &dy});
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sigmoid_lerp_backward(a, x, y, dout, dx, dy, da));
    return;
  }
  const float av = a.ptr<float>()[0];
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    using X = std::remove_pointer_t<decltype(xp)>;
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      using Y = std::remove_pointer_t<decltype(yp)>;
      cpu::visit_fb(op, "dout", dout, [&](auto* gp) {
        const float d = bwd<float>(av, xp, yp, gp, dx.defined() ? static_cast<X*>(dx.data()) : static_cast<X*>(nullptr),
                                   dy.defined() ? static_cast<Y*>(dy.data()) : static_cast<Y*>(nullptr), x.numel());
        da.ptr<float>()[0] += d;
      });
    });
  });
}

namespace ref {
void sigmoid_lerp_forward(double a, const double* x, const double* y, double* out, int64_t n) {
  fwd<double>(a, x, y, out, n);
}
void sigmoid_lerp_backward(double a, const double* x, const double* y, const double* dout, double* dx, double* dy,
                           double* da, int64_t n) {
  *da += bwd<double>(a, x, y, dout, dx, dy, n);
}
}  // namespace ref

}  // namespace pgolf::ops
