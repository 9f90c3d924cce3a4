#include "ops/optim.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

void check_hp(const char* op, const Tensor& hp, int64_t n) {
  cpu::check_f32(op, "hp", hp);
  check_shape(op, "hp", hp, Shape{n});
}

void check_like(const char* op, const char* name, const Tensor& t, const Tensor& ref, bool f32_only) {
  if (f32_only) cpu::check_f32(op, name, t);
  else cpu::check_fb(op, name, t);
  check_shape(op, name, t, ref.shape());
}

}  // namespace

void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& hp) {
  const char* op = "adam_step";
  cpu::check_f32(op, "p", p);
  check_like(op, "g", g, p, true);
  check_like(op, "m", m, p, true);
  check_like(op, "v", v, p, true);
  check_hp(op, hp, 8);
  if (check_same_device(op, {&p, &g, &m, &v, &hp}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::adam_step(p, g, m, v, hp));
    return;
  }
  const float* h = hp.ptr<float>();
  const float lr = h[0], b1 = h[1], b2 = h[2], eps = h[3], wd = h[4], bc1 = h[5], bc2 = h[6], gs = h[7];
  float *pp = p.ptr<float>(), *mp = m.ptr<float>(), *vp = v.ptr<float>();
  const float* gp = g.ptr<float>();
  for (int64_t i = 0, n = p.numel(); i < n; ++i) {
    float gi = gp[i] * gs;
    mp[i] = b1 * mp[i] + (1.f - b1) * gi;
    vp[i] = b2 * vp[i] + (1.f - b2) * gi * gi;
    pp[i] = pp[i] * (1.f - lr * wd) - lr * (mp[i] / bc1) / (std::sqrt(vp[i] / bc2) + eps);
  }
}

void muon_momentum(const Tensor& g, const Tensor& buf, const Tensor& u, const Tensor& hp, bool nesterov) {
  const char* op = "muon_momentum";
  cpu::check_f32(op, "g", g);
  check_ndim(op, "g", g, 2);
  check_like(op, "buf", buf, g, true);
  check_like(op, "u", u, g, false);
  check_hp(op, hp, 2);
  if (check_same_device(op, {&g, &buf, &u, &hp}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::muon_momentum(g, buf, u, hp, nesterov));
    return;
  }
  const float mu = hp.ptr<float>()[0], gs = hp.ptr<float>()[1];
  const float* gp = g.ptr<float>();
  float* bp = buf.ptr<float>();
  cpu::visit_fb(op, "u", u, [&](auto* up) {
    for (int64_t i = 0, n = g.numel(); i < n; ++i) {
      float gi = gp[i] * gs;
      bp[i] = mu * bp[i] + gi;
      st(up[i], nesterov ? gi + mu * bp[i] : bp[i]);
    }
  });
}

void row_normalize(const Tensor& x, float eps) {
  const char* op = "row_normalize";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  if (x.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::row_normalize(x, eps));
    return;
  }
  const int64_t R = x.dim(0), C = x.dim(1);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    for (int64_t r = 0; r < R; ++r) {
      auto* row = xp + r * C;
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += ld<double>(row[c]) * ld<double>(row[c]);
      float inv = 1.f / std::max(static_cast<float>(std::sqrt(ss)), eps);
      for (int64_t c = 0; c < C; ++c) st(row[c], ld<float>(row[c]) * inv);
    }
  });
}

void muon_apply(const Tensor& p, const Tensor& x, const Tensor& hp) {
  const char* op = "muon_apply";
  cpu::check_f32(op, "p", p);
  check_ndim(op, "p", p, 2);
  check_like(op, "x", x, p, false);
  check_hp(op, hp, 3);
  if (check_same_device(op, {&p, &x, &hp}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::muon_apply(p, x, hp));
    return;
  }
  const float* h = hp.ptr<float>();
  const float lr = h[0], wd = h[1], shape_scale = h[2];
  float* pp = p.ptr<float>();
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    for (int64_t i = 0, n = p.numel(); i < n; ++i) pp[i] = pp[i] * (1.f - lr * wd) - lr * shape_scale * ld<float>(xp[i]);
  });
}

void ema_update(const Tensor& avg, const Tensor& p, const Tensor& hp) {
  const char* op = "ema_update";
  cpu::check_f32(op, "avg", avg);
  check_like(op, "p", p, avg, true);
  check_hp(op, hp, 1);
  if (check_same_device(op, {&avg, &p, &hp}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::ema_update(avg, p, hp));
    return;
  }
  const float decay = hp.ptr<float>()[0];
  float* a = avg.ptr<float>();
  const float* pp = p.ptr<float>();
  for (int64_t i = 0, n = avg.numel(); i < n; ++i) a[i] = decay * a[i] + (1.f - decay) * pp[i];
}

void clip_grad_scale(const Tensor& parts, const Tensor& order, double max_norm, const Tensor& hp, const Tensor& slots,
                     const Tensor& norm_out) {
  const char* op = "clip_grad_scale";
  cpu::check_f32(op, "parts", parts);
  check_ndim(op, "parts", parts, 1);
  check_dtype(op, "order", order, {DType::I32});
  check_ndim(op, "order", order, 1);
  cpu::check_f32(op, "hp", hp);
  check_dtype(op, "slots", slots, {DType::I32});
  check_ndim(op, "slots", slots, 1);
  check_hp(op, norm_out, 1);
  if (check_same_device(op, {&parts, &order, &hp, &slots, &norm_out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::clip_grad_scale(parts, order, max_norm, hp, slots, norm_out));
    return;
  }
  const float* pp = parts.ptr<float>();
  const int32_t* op_idx = order.ptr<int32_t>();
  double sq = 0;
  for (int64_t j = 0; j < order.numel(); ++j) {
    PG_CHECK(op_idx[j] >= 0 && op_idx[j] < parts.numel(), "{}: order[{}] = {} outside parts {}", op, j, op_idx[j],
             parts.desc());
    sq += static_cast<double>(pp[op_idx[j]]);
  }
  const double norm = std::sqrt(sq);
  // std::min(1.0, q): a NaN norm gives 1 (no scaling), as the host-side clip always did.
  const auto scale = static_cast<float>(std::min(1.0, max_norm / (norm + 1e-6)));
  float* h = hp.ptr<float>();
  const int32_t* sp = slots.ptr<int32_t>();
  for (int64_t k = 0; k < slots.numel(); ++k) {
    PG_CHECK(sp[k] >= 0 && sp[k] < hp.numel(), "{}: slots[{}] = {} outside hp {}", op, k, sp[k], hp.desc());
    h[sp[k]] = scale;
  }
  norm_out.ptr<float>()[0] = static_cast<float>(norm);
}

}  // namespace pgolf::ops
