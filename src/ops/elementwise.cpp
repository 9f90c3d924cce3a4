#include "ops/elementwise.h"

#include <cmath>
#include <cstring>

#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// out[i] = fn(a[i]) over equal-numel tensors of any f32/bf16 mix (in order, so out may alias a).
template <class Fn> void map1(const char* op, const Tensor& a, const Tensor& out, Fn fn) {
  cpu::visit_fb(op, "input", a, [&](auto* ap) {
    cpu::visit_fb(op, "out", out, [&](auto* op_) {
      for (int64_t i = 0, n = a.numel(); i < n; ++i) st(op_[i], fn(ld<float>(ap[i])));
    });
  });
}

template <class Fn> void map2(const char* op, const Tensor& a, const Tensor& b, const Tensor& out, Fn fn) {
  cpu::visit_fb(op, "a", a, [&](auto* ap) {
    cpu::visit_fb(op, "b", b, [&](auto* bp) {
      cpu::visit_fb(op, "out", out, [&](auto* op_) {
        for (int64_t i = 0, n = a.numel(); i < n; ++i) st(op_[i], fn(ld<float>(ap[i]), ld<float>(bp[i])));
      });
    });
  });
}

// Per-channel vectors: s is (C) f32 and x is (N, C).
void check_channel(const char* op, const char* sn, const Tensor& s, const char* xn, const Tensor& x) {
  cpu::check_f32(op, sn, s);
  cpu::check_fb(op, xn, x);
  check_ndim(op, xn, x, 2);
  check_shape(op, sn, s, Shape{x.dim(1)});
}

float load_any(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const bf16*>(p)[i]);
    default: return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
}

void store_any(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::BF16: static_cast<bf16*>(p)[i] = f32_to_bf16(v); break;
    default: static_cast<uint16_t*>(p)[i] = f32_to_f16_bits(v); break;
  }
}

template <class S, class TG, class TX, class TO>
void sigmoid_gate_fwd_kernel(const TG* g, const TX* x, TO* out, int64_t N, int64_t C, bool per_channel) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      int64_t i = n * C + c;
      S gv = ld<S>(g[per_channel ? c : i]);
      S s = S(1) / (S(1) + std::exp(-gv));
      st(out[i], s * ld<S>(x[i]));
    }
}

// dx may alias dout: each element is read before it is written.
template <class S, class TG, class TX, class TD, class TDX, class TDG>
void sigmoid_gate_bwd_kernel(const TG* g, const TX* x, const TD* dout, TDX* dx, TDG* dg, int64_t N, int64_t C,
                             bool per_channel) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      int64_t i = n * C + c;
      int64_t gi = per_channel ? c : i;
      S s = S(1) / (S(1) + std::exp(-ld<S>(g[gi])));
      S d = ld<S>(dout[i]);
      S xv = ld<S>(x[i]);
      if (dg) st(dg[gi], ld<S>(dg[gi]) + d * xv * s * (S(1) - s));
      st(dx[i], s * d);
    }
}

// g is per-channel when it is 1-D and x is (N, C) with a different element count; else elementwise.
bool gate_is_per_channel(const char* op, const Tensor& g, const Tensor& x) {
  if (g.numel() == x.numel()) return false;
  PG_CHECK(g.ndim() == 1 && x.ndim() == 2 && g.dim(0) == x.dim(1),
           "{}: gate g is {} and x is {}: g must match x elementwise or be (C) for x (N, C)", op, g.desc(),
           x.desc());
  return true;
}

}  // namespace

void fill(const Tensor& x, float value) {
  const char* op = "fill";
  cpu::check_fb(op, "x", x);
  if (x.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::fill(x, value));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t i = 0, n = x.numel(); i < n; ++i) st(p[i], value);
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  const char* op = "copy";
  check_defined(op, "src", src);
  check_defined(op, "dst", dst);
  Device dev = check_same_device(op, {&src, &dst});
  cpu::check_same_numel(op, "src", src, "dst", dst);
  if (src.dtype() != dst.dtype()) {
    check_dtype(op, "src", src, {DType::F32, DType::BF16, DType::F16});
    check_dtype(op, "dst", dst, {DType::F32, DType::BF16, DType::F16});
  }
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::copy(src, dst));
    return;
  }
  if (src.dtype() == dst.dtype()) {
    if (src.nbytes()) std::memmove(dst.data(), src.data(), src.nbytes());
    return;
  }
  for (int64_t i = 0, n = src.numel(); i < n; ++i)
    store_any(dst.data(), dst.dtype(), i, load_any(src.data(), src.dtype(), i));
}

// Shared checks of the elementwise binary ops: f32/bf16 operands of one numel on one device.
static Device check_binary(const char* op, const Tensor& a, const Tensor& b, const Tensor& out) {
  cpu::check_fb(op, "a", a);
  cpu::check_fb(op, "b", b);
  cpu::check_fb(op, "out", out);
  Device dev = check_same_device(op, {&a, &b, &out});
  cpu::check_same_numel(op, "a", a, "b", b);
  cpu::check_same_numel(op, "a", a, "out", out);
  return dev;
}

void add(const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* op = "add";
  Device dev = check_binary(op, a, b, out);
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::add(a, b, out));
    return;
  }
  map2(op, a, b, out, [](float x, float y) { return x + y; });
}

void axpby(float alpha, const Tensor& x, float beta, const Tensor& y) {
  const char* op = "axpby";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "y", y);
  Device dev = check_same_device(op, {&x, &y});
  cpu::check_same_numel(op, "x", x, "y", y);
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::axpby(alpha, x, beta, y));
    return;
  }
  // beta == 0 overwrites y (BLAS convention), so y may hold garbage.
  map2(op, x, y, y, [=](float xv, float yv) { return beta == 0.f ? alpha * xv : alpha * xv + beta * yv; });
}

void mul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* op = "mul";
  Device dev = check_binary(op, a, b, out);
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::mul(a, b, out));
    return;
  }
  map2(op, a, b, out, [](float x, float y) { return x * y; });
}

void scale(const Tensor& x, float alpha, const Tensor& out) {
  const char* op = "scale";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "out", out);
  Device dev = check_same_device(op, {&x, &out});
  cpu::check_same_numel(op, "x", x, "out", out);
  if (dev == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::scale(x, alpha, out));
    return;
  }
  map1(op, x, out, [=](float v) { return alpha * v; });
}

void mul_channel(const Tensor& x, const Tensor& s, const Tensor& out) {
  const char* op = "mul_channel";
  check_channel(op, "s", s, "x", x);
  cpu::check_fb(op, "out", out);
  check_shape(op, "out", out, x.shape());
  if (check_same_device(op, {&x, &s, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::mul_channel(x, s, out));
    return;
  }
  const float* sp = s.ptr<float>();
  int64_t N = x.dim(0), C = x.dim(1);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "out", out, [&](auto* o) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) st(o[n * C + c], sp[c] * ld<float>(xp[n * C + c]));
    });
  });
}

void add_mul_channel(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& out) {
  const char* op = "add_mul_channel";
  check_channel(op, "s", s, "x", x);
  cpu::check_fb(op, "f", f);
  cpu::check_fb(op, "out", out);
  check_shape(op, "f", f, x.shape());
  check_shape(op, "out", out, x.shape());
  if (check_same_device(op, {&x, &s, &f, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::add_mul_channel(x, s, f, out));
    return;
  }
  const float* sp = s.ptr<float>();
  int64_t N = x.dim(0), C = x.dim(1);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "f", f, [&](auto* fp) {
      cpu::visit_fb(op, "out", out, [&](auto* o) {
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) {
            int64_t i = n * C + c;
            st(o[i], ld<float>(xp[i]) + sp[c] * ld<float>(fp[i]));
          }
      });
    });
  });
}

void channel_dot_accum(const Tensor& a, const Tensor& b, const Tensor& ds) {
  const char* op = "channel_dot_accum";
  check_channel(op, "ds", ds, "a", a);
  cpu::check_fb(op, "b", b);
  check_shape(op, "b", b, a.shape());
  if (check_same_device(op, {&a, &b, &ds}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::channel_dot_accum(a, b, ds));
    return;
  }
  float* d = ds.ptr<float>();
  int64_t N = a.dim(0), C = a.dim(1);
  std::vector<double> acc(static_cast<size_t>(C), 0.0);
  cpu::visit_fb(op, "a", a, [&](auto* ap) {
    cpu::visit_fb(op, "b", b, [&](auto* bp) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) acc[c] += ld<double>(ap[n * C + c]) * ld<double>(bp[n * C + c]);
    });
  });
  for (int64_t c = 0; c < C; ++c) d[c] = static_cast<float>(d[c] + acc[c]);
}

void mix_channel(const Tensor& s0, const Tensor& x0, const Tensor& s1, const Tensor& x1, const Tensor& out) {
  const char* op = "mix_channel";
  check_channel(op, "s0", s0, "x0", x0);
  check_channel(op, "s1", s1, "x1", x1);
  check_shape(op, "x1", x1, x0.shape());
  cpu::check_fb(op, "out", out);
  check_shape(op, "out", out, x0.shape());
  if (check_same_device(op, {&s0, &x0, &s1, &x1, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::mix_channel(s0, x0, s1, x1, out));
    return;
  }
  const float* a = s0.ptr<float>();
  const float* b = s1.ptr<float>();
  int64_t N = x0.dim(0), C = x0.dim(1);
  cpu::visit_fb(op, "x0", x0, [&](auto* p0) {
    cpu::visit_fb(op, "x1", x1, [&](auto* p1) {
      cpu::visit_fb(op, "out", out, [&](auto* o) {
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) {
            int64_t i = n * C + c;
            st(o[i], a[c] * ld<float>(p0[i]) + b[c] * ld<float>(p1[i]));
          }
      });
    });
  });
}

void sigmoid_gate_forward(const Tensor& g, const Tensor& x, const Tensor& out) {
  const char* op = "sigmoid_gate_forward";
  cpu::check_fb(op, "g", g);
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "out", out);
  cpu::check_same_numel(op, "x", x, "out", out);
  bool per_channel = gate_is_per_channel(op, g, x);
  if (per_channel) cpu::check_f32(op, "g", g);
  if (check_same_device(op, {&g, &x, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sigmoid_gate_forward(g, x, out));
    return;
  }
  int64_t C = per_channel ? g.numel() : 1, N = per_channel ? x.numel() / C : x.numel();
  cpu::visit_fb(op, "g", g, [&](auto* gp) {
    cpu::visit_fb(op, "x", x, [&](auto* xp) {
      cpu::visit_fb(op, "out", out, [&](auto* o) { sigmoid_gate_fwd_kernel<float>(gp, xp, o, N, C, per_channel); });
    });
  });
}

void sigmoid_gate_backward(const Tensor& g, const Tensor& x, const Tensor& dout, const Tensor& dx,
                           const Tensor& dg) {
  const char* op = "sigmoid_gate_backward";
  cpu::check_fb(op, "g", g);
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "dout", dout);
  cpu::check_fb(op, "dx", dx);
  cpu::check_same_numel(op, "x", x, "dout", dout);
  cpu::check_same_numel(op, "x", x, "dx", dx);
  bool per_channel = gate_is_per_channel(op, g, x);
  if (per_channel) cpu::check_f32(op, "g", g);
  if (dg.defined()) {
    cpu::check_f32(op, "dg", dg);
    check_shape(op, "dg", dg, g.shape());
  }
  if (check_same_device(op, {&g, &x, &dout, &dx, &dg}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sigmoid_gate_backward(g, x, dout, dx, dg));
    return;
  }
  int64_t C = per_channel ? g.numel() : 1, N = per_channel ? x.numel() / C : x.numel();
  float* dgp = dg.defined() ? static_cast<float*>(dg.data()) : nullptr;
  // Per-channel dg sums over many rows: accumulate in double, then add once.
  std::vector<double> acc;
  if (dgp && per_channel) acc.assign(static_cast<size_t>(C), 0.0);
  cpu::visit_fb(op, "g", g, [&](auto* gp) {
    cpu::visit_fb(op, "x", x, [&](auto* xp) {
      cpu::visit_fb(op, "dout", dout, [&](auto* dp) {
        cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
          if (!dgp || !per_channel) {
            sigmoid_gate_bwd_kernel<float>(gp, xp, dp, dxp, dgp, N, C, per_channel);
          } else {
            sigmoid_gate_bwd_kernel<float>(gp, xp, dp, dxp, acc.data(), N, C, per_channel);
          }
        });
      });
    });
  });
  if (dgp && per_channel)
    for (int64_t c = 0; c < C; ++c) dgp[c] = static_cast<float>(dgp[c] + acc[c]);
}

namespace ref {
void sigmoid_gate_forward(const double* g, const double* x, double* out, int64_t N, int64_t C, bool per_channel) {
  sigmoid_gate_fwd_kernel<double>(g, x, out, N, C, per_channel);
}
void sigmoid_gate_backward(const double* g, const double* x, const double* dout, double* dx, double* dg, int64_t N,
                           int64_t C, bool per_channel) {
  sigmoid_gate_bwd_kernel<double>(g, x, dout, dx, dg, N, C, per_channel);
}
}  // namespace ref

}  // namespace pgolf::ops
