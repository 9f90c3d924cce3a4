#include "ops/rope.h"

#include <cmath>
#include <vector>

#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// Rotates the first rot_dims dims of every head of x (B, T, H, D) into y; `transpose` applies
// R^T (the backward). Pairs are read before they are written, so y may alias x.
template <class S, class TX, class TY>
void rope_kernel(const TX* x, TY* y, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims, S base,
                 int64_t pos_offset, bool transpose) {
  const int64_t half = rot_dims / 2;
  std::vector<S> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int64_t t = 0; t < T; ++t) {
    S pos = static_cast<S>(pos_offset + t);
    for (int64_t i = 0; i < half; ++i) {
      S inv_freq = std::pow(base, S(-2) * static_cast<S>(i) / static_cast<S>(rot_dims));
      S ang = pos * inv_freq;
      cs[i] = std::cos(ang);
      sn[i] = transpose ? -std::sin(ang) : std::sin(ang);
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        int64_t o = ((b * T + t) * H + h) * D;
        const TX* xr = x + o;
        TY* yr = y + o;
        for (int64_t i = 0; i < half; ++i) {
          S a = ld<S>(xr[i]), c = ld<S>(xr[i + half]);
          st(yr[i], a * cs[i] - c * sn[i]);
          st(yr[i + half], c * cs[i] + a * sn[i]);
        }
        for (int64_t d = rot_dims; d < D; ++d) st(yr[d], ld<S>(xr[d]));
      }
  }
}

void rope_cpu(const char* op, const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset,
              bool transpose) {
  cpu::visit_fb(op, "input", x, [&](auto* xp) {
    cpu::visit_fb(op, "output", y, [&](auto* yp) {
      rope_kernel<float>(xp, yp, x.dim(0), x.dim(1), x.dim(2), x.dim(3), rot_dims, base, pos_offset, transpose);
    });
  });
}

void check_rope(const char* op, const char* xn, const Tensor& x, const char* yn, const Tensor& y, int rot_dims,
                float base, int64_t pos_offset) {
  cpu::check_fb(op, xn, x);
  check_ndim(op, xn, x, 4);
  cpu::check_fb(op, yn, y);
  check_shape(op, yn, y, x.shape());
  PG_CHECK(rot_dims >= 0 && rot_dims % 2 == 0 && rot_dims <= x.dim(3),
           "{}: rot_dims {} must be even and within the head dim of {}", op, rot_dims, x.desc());
  PG_CHECK(base > 0.f, "{}: base {} must be positive", op, base);
  PG_CHECK(pos_offset >= 0, "{}: pos_offset {} is negative", op, pos_offset);
}

}  // namespace

void rope_forward(const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset) {
  const char* op = "rope_forward";
  check_rope(op, "x", x, "y", y, rot_dims, base, pos_offset);
  if (check_same_device(op, {&x, &y}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::rope_forward(x, y, rot_dims, base, pos_offset));
    return;
  }
  rope_cpu(op, x, y, rot_dims, base, pos_offset, false);
}

void rope_backward(const Tensor& dy, const Tensor& dx, int rot_dims, float base, int64_t pos_offset) {
  const char* op = "rope_backward";
  check_rope(op, "dy", dy, "dx", dx, rot_dims, base, pos_offset);
  if (check_same_device(op, {&dy, &dx}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::rope_backward(dy, dx, rot_dims, base, pos_offset));
    return;
  }
  rope_cpu(op, dy, dx, rot_dims, base, pos_offset, true);
}

namespace ref {
void rope_forward(const double* x, double* y, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims,
                  double base, int64_t pos_offset) {
  rope_kernel<double>(x, y, B, T, H, D, rot_dims, base, pos_offset, false);
}
void rope_backward(const double* dy, double* dx, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims,
                   double base, int64_t pos_offset) {
  rope_kernel<double>(dy, dx, B, T, H, D, rot_dims, base, pos_offset, true);
}
}  // namespace ref

}  // namespace pgolf::ops
