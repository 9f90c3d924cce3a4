#include "ops/activation.h"

#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// a(x) = x for x > 0, else 0 (Relu2) or slope * x (LeakyRelu2); y = a^2.
template <class S, class TX, class TY>
void act_fwd_kernel(Act act, const TX* x, TY* y, int64_t n, S slope) {
  S neg = act == Act::Relu2 ? S(0) : slope;
  for (int64_t i = 0; i < n; ++i) {
    S v = ld<S>(x[i]);
    S a = v > S(0) ? v : neg * v;
    st(y[i], a * a);
  }
}

// dx = dy * 2 a(x) a'(x); dx may alias dy (elementwise, read before write).
template <class S, class TX, class TD, class TDX>
void act_bwd_kernel(Act act, const TX* x, const TD* dy, TDX* dx, int64_t n, S slope) {
  S neg = act == Act::Relu2 ? S(0) : slope;
  for (int64_t i = 0; i < n; ++i) {
    S v = ld<S>(x[i]);
    S g = v > S(0) ? S(2) * v : S(2) * neg * neg * v;
    st(dx[i], ld<S>(dy[i]) * g);
  }
}

}  // namespace

void activation_forward(Act act, const Tensor& x, const Tensor& y, float slope) {
  const char* op = "activation_forward";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "y", y);
  cpu::check_same_numel(op, "x", x, "y", y);
  if (check_same_device(op, {&x, &y}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::activation_forward(act, x, y, slope));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) { act_fwd_kernel<float>(act, xp, yp, x.numel(), slope); });
  });
}

void activation_backward(Act act, const Tensor& x, const Tensor& dy, const Tensor& dx, float slope) {
  const char* op = "activation_backward";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "dy", dy);
  cpu::check_fb(op, "dx", dx);
  cpu::check_same_numel(op, "x", x, "dy", dy);
  cpu::check_same_numel(op, "x", x, "dx", dx);
  if (check_same_device(op, {&x, &dy, &dx}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::activation_backward(act, x, dy, dx, slope));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "dy", dy, [&](auto* dyp) {
      cpu::visit_fb(op, "dx", dx, [&](auto* dxp) { act_bwd_kernel<float>(act, xp, dyp, dxp, x.numel(), slope); });
    });
  });
}

namespace ref {
void activation_forward(Act act, const double* x, double* y, int64_t n, double slope) {
  act_fwd_kernel<double>(act, x, y, n, slope);
}
void activation_backward(Act act, const double* x, const double* dy, double* dx, int64_t n, double slope) {
  act_bwd_kernel<double>(act, x, dy, dx, n, slope);
}
}  // namespace ref

}  // namespace pgolf::ops
