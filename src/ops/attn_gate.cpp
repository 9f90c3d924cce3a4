#include "ops/attn_gate.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

template <class S> S sigmoid(S z) { return S(1) / (S(1) + std::exp(-z)); }

// sigmoid(c * w[h] . x[n, 0:W]) of every head of token n into s[0..H).
template <class S, class E, class P>
void gates(const E* x, const P* w, S c, int64_t n, int64_t C, int64_t H, int64_t W, S* s) {
  for (int64_t h = 0; h < H; ++h) {
    S z = 0;
    for (int64_t j = 0; j < W; ++j) z += ld<S>(w[h * W + j]) * ld<S>(x[n * C + j]);
    s[h] = sigmoid<S>(c * z);
  }
}

template <class S, class E, class P, class Y>
void fwd(const E* x, const P* w, const Y* y, S amp, S c, Y* out, int64_t N, int64_t C, int64_t H, int64_t W,
         int64_t D) {
  std::vector<S> s(static_cast<size_t>(H));
  for (int64_t n = 0; n < N; ++n) {
    gates<S>(x, w, c, n, C, H, W, s.data());
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (n * H + h) * D + d;
        st(out[i], amp * s[static_cast<size_t>(h)] * ld<S>(y[i]));
      }
  }
}

template <class S, class E, class P, class Y>
void bwd(const E* x, const P* w, const Y* y, const Y* dout, S amp, S c, E* dx, Y* dy, P* dw, int64_t N, int64_t C,
         int64_t H, int64_t W, int64_t D) {
  std::vector<S> s(static_cast<size_t>(H)), dz(static_cast<size_t>(H));
  for (int64_t n = 0; n < N; ++n) {
    gates<S>(x, w, c, n, C, H, W, s.data());
    for (int64_t h = 0; h < H; ++h) {
      const S sh = s[static_cast<size_t>(h)];
      S a = 0;  // y[n, h] . dout[n, h]
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (n * H + h) * D + d;
        a += ld<S>(y[i]) * ld<S>(dout[i]);
        st(dy[i], amp * sh * ld<S>(dout[i]));
      }
      dz[static_cast<size_t>(h)] = amp * c * sh * (S(1) - sh) * a;  // d loss / d z[n, h]
      for (int64_t j = 0; j < W; ++j)
        st(dw[h * W + j], ld<S>(dw[h * W + j]) + dz[static_cast<size_t>(h)] * ld<S>(x[n * C + j]));
    }
    if (dx == nullptr) continue;
    for (int64_t j = 0; j < C; ++j) {
      S v = 0;
      if (j < W)
        for (int64_t h = 0; h < H; ++h) v += dz[static_cast<size_t>(h)] * ld<S>(w[h * W + j]);
      st(dx[n * C + j], v);
    }
  }
}

struct Dims {
  int64_t N, C, H, W, D;
};

Dims check_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& y) {
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  cpu::check_f32(op, "w", w);
  check_ndim(op, "w", w, 2);
  cpu::check_fb(op, "y", y);
  check_ndim(op, "y", y, 3);
  const Dims d{x.dim(0), x.dim(1), w.dim(0), w.dim(1), y.dim(2)};
  PG_CHECK(y.dim(0) == d.N && y.dim(1) == d.H, "{}: y {} must be (N = {}, H = {}, D) for x {} and w {}", op,
           y.desc(), d.N, d.H, x.desc(), w.desc());
  PG_CHECK(d.W >= 1 && d.W <= d.C, "{}: gate window {} (w {}) must be in 1..C = {}", op, d.W, w.desc(), d.C);
  PG_CHECK(d.H >= 1 && d.H <= 64 && d.H * d.W <= 8192, "{}: w {} must have 1..64 heads and at most 8192 values", op,
           w.desc());
  return d;
}

void check_like(const char* op, const char* name, const Tensor& t, const char* ref_name, const Tensor& ref) {
  check_defined(op, name, t);
  PG_CHECK(t.dtype() == ref.dtype() && t.shape() == ref.shape(), "{}: {} {} must match {} {}", op, name, t.desc(),
           ref_name, ref.desc());
}

}  // namespace

void attn_gate_forward(const Tensor& x, const Tensor& w, const Tensor& y, float amp, float c, const Tensor& out) {
  const char* op = "attn_gate_forward";
  const Dims d = check_args(op, x, w, y);
  check_like(op, "out", out, "y", y);
  PG_CHECK(out.data() != y.data() || d.N == 0, "{}: out must not alias y", op);
  if (check_same_device(op, {&x, &w, &y, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::attn_gate_forward(x, w, y, amp, c, out));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      using Y = std::remove_pointer_t<decltype(yp)>;
      fwd<float>(xp, w.ptr<float>(), yp, amp, c, static_cast<Y*>(out.data()), d.N, d.C, d.H, d.W, d.D);
    });
  });
}

void attn_gate_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dout, float amp, float c,
                        const Tensor& dx, const Tensor& dy, const Tensor& dw) {
  const char* op = "attn_gate_backward";
  const Dims d = check_args(op, x, w, y);
  check_like(op, "dout", dout, "y", y);
  check_like(op, "dy", dy, "y", y);
  if (dx.defined()) check_like(op, "dx", dx, "x", x);
  cpu::check_f32(op, "dw", dw);
  check_shape(op, "dw", dw, w.shape());
  PG_CHECK(dy.data() != dout.data() || d.N == 0, "{}: dy must not alias dout", op);
  const Device dev = dx.defined() ? check_same_device(op, {&x, &w, &y, &dout, &dx, &dy, &dw})
                                  : check_same_device(op, {&x, &w, &y, &dout, &dy, &dw});
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::attn_gate_backward(x, w, y, dout, amp, c, dx, dy, dw));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    using E = std::remove_pointer_t<decltype(xp)>;
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      using Y = std::remove_pointer_t<decltype(yp)>;
      bwd<float>(xp, w.ptr<float>(), yp, static_cast<const Y*>(dout.data()), amp, c,
                 dx.defined() ? static_cast<E*>(dx.data()) : static_cast<E*>(nullptr), static_cast<Y*>(dy.data()),
                 dw.ptr<float>(), d.N, d.C, d.H, d.W, d.D);
    });
  });
}

namespace ref {
void attn_gate_forward(const double* x, const double* w, const double* y, double amp, double c, double* out,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t D) {
  fwd<double>(x, w, y, amp, c, out, N, C, H, W, D);
}
void attn_gate_backward(const double* x, const double* w, const double* y, const double* dout, double amp, double c,
                        double* dx, double* dy, double* dw, int64_t N, int64_t C, int64_t H, int64_t W, int64_t D) {
  bwd<double>(x, w, y, dout, amp, c, dx, dy, dw, N, C, H, W, D);
}
}  // namespace ref

}  // namespace pgolf::ops
