#include "ops/qk_prep.h"

#include <cmath>
#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// cos/sin of pos * base^(-2i/rot_dims) for i < rot_dims/2, as ops/rope.cpp computes them.
template <class S>
void angles(S pos, int rot_dims, S base, std::vector<S>& cs, std::vector<S>& sn) {
  const int half = rot_dims / 2;
  for (int i = 0; i < half; ++i) {
    const S ang = pos * std::pow(base, S(-2) * static_cast<S>(i) / static_cast<S>(rot_dims));
    cs[static_cast<size_t>(i)] = std::cos(ang);
    sn[static_cast<size_t>(i)] = std::sin(ang);
  }
}

template <class S, class TX, class TG, class TY, class TR>
void fwd_kernel(const TX* x, const TG* gain, TY* y, TR* rstd, int64_t B, int64_t T, int64_t H, int64_t D, int rot,
                S base, S eps, int64_t pos_offset) {
  const int half = rot / 2;
  std::vector<S> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half)), n(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    angles<S>(static_cast<S>(pos_offset + t), rot, base, cs, sn);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = (b * T + t) * H + h;
        const TX* xr = x + row * D;
        S ss = 0;
        for (int64_t d = 0; d < D; ++d) ss += ld<S>(xr[d]) * ld<S>(xr[d]);
        const S r = S(1) / std::sqrt(ss / static_cast<S>(D) + eps);
        st(rstd[row], r);
        for (int64_t d = 0; d < D; ++d) n[static_cast<size_t>(d)] = ld<S>(xr[d]) * r;
        const S g = gain ? ld<S>(gain[h]) : S(1);
        TY* yr = y + row * D;
        for (int i = 0; i < half; ++i) {
          const S a = n[static_cast<size_t>(i)], c = n[static_cast<size_t>(i + half)];
          st(yr[i], g * (a * cs[static_cast<size_t>(i)] - c * sn[static_cast<size_t>(i)]));
          st(yr[i + half], g * (c * cs[static_cast<size_t>(i)] + a * sn[static_cast<size_t>(i)]));
        }
        for (int64_t d = rot; d < D; ++d) st(yr[d], g * n[static_cast<size_t>(d)]);
      }
  }
}

template <class S, class TX, class TG, class TR, class TD, class TDX, class TDG>
void bwd_kernel(const TX* x, const TG* gain, const TR* rstd, const TD* dy, TDX* dx, TDG* dgain, int64_t B, int64_t T,
                int64_t H, int64_t D, int rot, S base, int64_t pos_offset) {
  const int half = rot / 2;
  std::vector<S> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half)), dn(static_cast<size_t>(D));
  std::vector<S> dg(static_cast<size_t>(H), S(0));
  for (int64_t t = 0; t < T; ++t) {
    angles<S>(static_cast<S>(pos_offset + t), rot, base, cs, sn);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = (b * T + t) * H + h;
        const TX* xr = x + row * D;
        const TD* dr = dy + row * D;
        const S r = ld<S>(rstd[row]);
        const S g = gain ? ld<S>(gain[h]) : S(1);
        // dgain: dy . u with u = R(n); dn = R^T (g dy).
        S dgh = 0;
        for (int i = 0; i < half; ++i) {
          const S a = ld<S>(xr[i]) * r, c = ld<S>(xr[i + half]) * r;
          const S ca = cs[static_cast<size_t>(i)], sa = sn[static_cast<size_t>(i)];
          const S d0 = ld<S>(dr[i]), d1 = ld<S>(dr[i + half]);
          dgh += d0 * (a * ca - c * sa) + d1 * (c * ca + a * sa);
          dn[static_cast<size_t>(i)] = g * (d0 * ca + d1 * sa);
          dn[static_cast<size_t>(i + half)] = g * (d1 * ca - d0 * sa);
        }
        for (int64_t d = rot; d < D; ++d) {
          dgh += ld<S>(dr[d]) * ld<S>(xr[d]) * r;
          dn[static_cast<size_t>(d)] = g * ld<S>(dr[d]);
        }
        dg[static_cast<size_t>(h)] += dgh;
        S dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += dn[static_cast<size_t>(d)] * ld<S>(xr[d]) * r;
        const S mean = dot / static_cast<S>(D);
        TDX* out = dx + row * D;
        for (int64_t d = 0; d < D; ++d) st(out[d], r * (dn[static_cast<size_t>(d)] - ld<S>(xr[d]) * r * mean));
      }
  }
  if (dgain)
    for (int64_t h = 0; h < H; ++h) dgain[h] = static_cast<TDG>(static_cast<S>(dgain[h]) + dg[static_cast<size_t>(h)]);
}

void check_args(const char* op, const Tensor& x, const Tensor& gain, const Tensor& other, const char* other_name,
                const Tensor& rstd, int rot_dims, float base) {
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 4);
  cpu::check_fb(op, other_name, other);
  check_shape(op, other_name, other, x.shape());
  PG_CHECK(other.data() != x.data(), "{}: {} may not alias x", op, other_name);
  cpu::check_f32(op, "rstd", rstd);
  PG_CHECK(rstd.numel() == x.dim(0) * x.dim(1) * x.dim(2), "{}: rstd is {} but x {} has {} heads in all", op,
           rstd.desc(), x.desc(), x.dim(0) * x.dim(1) * x.dim(2));
  if (gain.defined()) {
    cpu::check_f32(op, "gain", gain);
    PG_CHECK(gain.numel() == x.dim(2), "{}: gain is {} but x {} has {} heads", op, gain.desc(), x.desc(), x.dim(2));
  }
  PG_CHECK(rot_dims >= 0 && rot_dims % 2 == 0 && rot_dims <= x.dim(3),
           "{}: rot_dims {} must be even and within the head dim of {}", op, rot_dims, x.desc());
  PG_CHECK(base > 0.f, "{}: base {} must be positive", op, base);
}

}  // namespace

void qk_prep_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, int rot_dims,
                     float base, float eps, int64_t pos_offset) {
  const char* op = "qk_prep_forward";
  check_args(op, x, gain, y, "y", rstd, rot_dims, base);
  PG_CHECK(pos_offset >= 0, "{}: pos_offset {} is negative", op, pos_offset);
  if (check_same_device(op, {&x, &y, &rstd, &gain}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::qk_prep_forward(x, gain, y, rstd, rot_dims, base, eps, pos_offset));
    return;
  }
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      fwd_kernel<float>(xp, g, yp, rstd.ptr<float>(), x.dim(0), x.dim(1), x.dim(2), x.dim(3), rot_dims, base, eps,
                        pos_offset);
    });
  });
}

void qk_prep_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain, int rot_dims, float base, int64_t pos_offset) {
  const char* op = "qk_prep_backward";
  check_args(op, x, gain, dy, "dy", rstd, rot_dims, base);
  cpu::check_fb(op, "dx", dx);
  check_shape(op, "dx", dx, x.shape());
  PG_CHECK(dx.data() != dy.data() && dx.data() != x.data(), "{}: dx may not alias dy or x", op);
  PG_CHECK(gain.defined() == dgain.defined(), "{}: dgain must be given exactly when gain is", op);
  if (gain.defined()) {
    cpu::check_f32(op, "dgain", dgain);
    check_shape(op, "dgain", dgain, gain.shape());
  }
  if (check_same_device(op, {&x, &rstd, &dy, &dx, &gain, &dgain}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::qk_prep_backward(x, gain, rstd, dy, dx, dgain, rot_dims, base, pos_offset));
    return;
  }
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  float* dg = dgain.defined() ? dgain.ptr<float>() : nullptr;
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "dy", dy, [&](auto* dyp) {
      cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
        bwd_kernel<float>(xp, g, rstd.ptr<float>(), dyp, dxp, dg, x.dim(0), x.dim(1), x.dim(2), x.dim(3), rot_dims,
                          base, pos_offset);
      });
    });
  });
}

namespace ref {
void qk_prep_forward(const double* x, const double* gain, double* y, double* rstd, int64_t B, int64_t T, int64_t H,
                     int64_t D, int rot_dims, double base, double eps, int64_t pos_offset) {
  fwd_kernel<double>(x, gain, y, rstd, B, T, H, D, rot_dims, base, eps, pos_offset);
}
void qk_prep_backward(const double* x, const double* gain, const double* rstd, const double* dy, double* dx,
                      double* dgain, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims, double base,
                      int64_t pos_offset) {
  bwd_kernel<double>(x, gain, rstd, dy, dx, dgain, B, T, H, D, rot_dims, base, pos_offset);
}
}  // namespace ref

}  // namespace pgolf::ops
