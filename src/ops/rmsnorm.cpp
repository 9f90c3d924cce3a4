#include "ops/rmsnorm.h"

#include <cmath>
#include <vector>

#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// y = x * r * gain with r = 1/sqrt(mean(x^2) + eps) per row. y may alias x.
template <class S, class TX, class TG, class TY, class TR>
void rmsnorm_fwd_kernel(const TX* x, const TG* gain, TY* y, TR* rstd, int64_t N, int64_t C, S eps) {
  for (int64_t n = 0; n < N; ++n) {
    const TX* xr = x + n * C;
    S ss = 0;
    for (int64_t c = 0; c < C; ++c) {
      S v = ld<S>(xr[c]);
      ss += v * v;
    }
    S r = S(1) / std::sqrt(ss / static_cast<S>(C) + eps);
    st(rstd[n], r);
    TY* yr = y + n * C;
    for (int64_t c = 0; c < C; ++c) st(yr[c], ld<S>(xr[c]) * r * (gain ? ld<S>(gain[c]) : S(1)));
  }
}

// dx_k = r (g_k dy_k - x_k r^2 sum_j(dy_j g_j x_j) / C) ; dgain_k += sum_n dy_k x_k r (when dgain).
// dx may alias dy: each row's dot product is complete before the row is overwritten.
template <class S, class TX, class TG, class TR, class TD, class TDX>
void rmsnorm_bwd_kernel(const TX* x, const TG* gain, const TR* rstd, const TD* dy, TDX* dx, double* dgain, int64_t N,
                        int64_t C, bool from_output = false) {
  for (int64_t n = 0; n < N; ++n) {
    const TX* xr = x + n * C;
    const TD* dr = dy + n * C;
    S r = ld<S>(rstd[n]);
    S dot = 0;
    for (int64_t c = 0; c < C; ++c) {
      S xv = ld<S>(xr[c]), d = ld<S>(dr[c]);
      dot += d * (gain ? ld<S>(gain[c]) : S(1)) * xv;
      if (dgain) dgain[c] += static_cast<double>(d * xv * r);
    }
    // From the output (weightless, x holds y = x r): x r^2 dot(x) / C = y dot(y) / C, so k drops the r^2.
    S k = (from_output ? S(1) : r * r) * dot / static_cast<S>(C);
    TDX* out = dx + n * C;
    for (int64_t c = 0; c < C; ++c) {
      S g = gain ? ld<S>(gain[c]) : S(1);
      st(out[c], r * (g * ld<S>(dr[c]) - ld<S>(xr[c]) * k));
    }
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, float eps) {
  const char* op = "rmsnorm_forward";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  int64_t N = x.dim(0), C = x.dim(1);
  if (gain.defined()) {
    cpu::check_f32(op, "gain", gain);
    check_shape(op, "gain", gain, Shape{C});
  }
  cpu::check_fb(op, "y", y);
  check_shape(op, "y", y, x.shape());
  cpu::check_f32(op, "rstd", rstd);
  check_shape(op, "rstd", rstd, Shape{N});
  if (check_same_device(op, {&x, &gain, &y, &rstd}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::rmsnorm_forward(x, gain, y, rstd, eps));
    return;
  }
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  float* r = rstd.ptr<float>();
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) { rmsnorm_fwd_kernel<float>(xp, g, yp, r, N, C, eps); });
  });
}

void rmsnorm_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain) {
  const char* op = "rmsnorm_backward";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  int64_t N = x.dim(0), C = x.dim(1);
  if (gain.defined()) {
    cpu::check_f32(op, "gain", gain);
    check_shape(op, "gain", gain, Shape{C});
  }
  cpu::check_f32(op, "rstd", rstd);
  check_shape(op, "rstd", rstd, Shape{N});
  cpu::check_fb(op, "dy", dy);
  check_shape(op, "dy", dy, x.shape());
  cpu::check_fb(op, "dx", dx);
  check_shape(op, "dx", dx, x.shape());
  bool want_dgain = gain.defined() && dgain.defined();
  if (want_dgain) {
    cpu::check_f32(op, "dgain", dgain);
    check_shape(op, "dgain", dgain, Shape{C});
  }
  if (check_same_device(op, {&x, &gain, &rstd, &dy, &dx, &dgain}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::rmsnorm_backward(x, gain, rstd, dy, dx, dgain));
    return;
  }
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  const float* r = rstd.ptr<float>();
  std::vector<double> acc(want_dgain ? static_cast<size_t>(C) : 0, 0.0);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "dy", dy, [&](auto* dyp) {
      cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
        rmsnorm_bwd_kernel<float>(xp, g, r, dyp, dxp, want_dgain ? acc.data() : nullptr, N, C);
      });
    });
  });
  if (want_dgain) {
    float* dg = dgain.ptr<float>();
    for (int64_t c = 0; c < C; ++c) dg[c] = static_cast<float>(dg[c] + acc[c]);
  }
}

void rmsnorm_backward_from_output(const Tensor& y, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                                  bool accumulate) {
  const char* op = "rmsnorm_backward_from_output";
  cpu::check_fb(op, "y", y);
  check_ndim(op, "y", y, 2);
  const int64_t N = y.dim(0), C = y.dim(1);
  cpu::check_f32(op, "rstd", rstd);
  check_shape(op, "rstd", rstd, Shape{N});
  cpu::check_fb(op, "dy", dy);
  check_shape(op, "dy", dy, y.shape());
  cpu::check_fb(op, "dx", dx);
  check_shape(op, "dx", dx, y.shape());
  if (check_same_device(op, {&y, &rstd, &dy, &dx}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::rmsnorm_backward_from_output(y, rstd, dy, dx, accumulate));
    return;
  }
  PG_CHECK(!accumulate || (dx.data() != dy.data() && dx.data() != y.data()), "{}: an accumulated dx {} may not alias "
           "y or dy", op, dx.desc());
  const float* r = rstd.ptr<float>();
  // Accumulating: the contribution goes through an f32 scratch row block, then is added.
  std::vector<float> part(accumulate ? static_cast<size_t>(N * C) : 0);
  cpu::visit_fb(op, "y", y, [&](auto* yp) {
    cpu::visit_fb(op, "dy", dy, [&](auto* dyp) {
      if (accumulate) {
        rmsnorm_bwd_kernel<float>(yp, static_cast<const float*>(nullptr), r, dyp, part.data(), nullptr, N, C, true);
        cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
          for (int64_t i = 0; i < N * C; ++i) st(dxp[i], ld<float>(dxp[i]) + part[static_cast<size_t>(i)]);
        });
        return;
      }
      cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
        rmsnorm_bwd_kernel<float>(yp, static_cast<const float*>(nullptr), r, dyp, dxp, nullptr, N, C, true);
      });
    });
  });
}

namespace ref {
void rmsnorm_forward(const double* x, const double* gain, double* y, double* rstd, int64_t N, int64_t C,
                     double eps) {
  rmsnorm_fwd_kernel<double>(x, gain, y, rstd, N, C, eps);
}
void rmsnorm_backward(const double* x, const double* gain, const double* rstd, const double* dy, double* dx,
                      double* dgain, int64_t N, int64_t C) {
  rmsnorm_bwd_kernel<double>(x, gain, rstd, dy, dx, gain ? dgain : nullptr, N, C);
}
}  // namespace ref

}  // namespace pgolf::ops
