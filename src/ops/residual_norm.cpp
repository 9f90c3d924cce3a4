// CPU reference of the fused residual update + RMSNorm (ops/residual_norm.h). Rows are converted to
// float (or double for ref::) one at a time and run through the same per-row templates; the float
// order of operations is that of add_mul_channel / mix_channel + rmsnorm_forward and of
// rmsnorm_backward_from_output(accumulate) + channel_scale_backward, so with g = 1 the fused and the
// unfused paths agree bit for bit on the CPU (g != 1 moves the gain inside the norm's backward:
// float rounding only).
#include "ops/residual_norm.h"

#include <cmath>
#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// n = y r g with r = 1/sqrt(mean(y²) + eps); returns r. (rmsnorm_fwd_kernel's order: y r, then g.)
template <class S>
S norm_row(const S* y, S* n, int64_t C, S g, S eps) {
  S ss = 0;
  for (int64_t c = 0; c < C; ++c) ss += y[c] * y[c];
  const S r = S(1) / std::sqrt(ss / static_cast<S>(C) + eps);
  for (int64_t c = 0; c < C; ++c) n[c] = y[c] * r * g;
  return r;
}

// dy += r (g dn - n k), k = mean(dn n) / g: the norm's backward from its output n = g m (see header).
template <class S>
void norm_back_row(const S* n, const S* dn, S r, S g, S* dy, int64_t C) {
  S dot = 0;
  for (int64_t c = 0; c < C; ++c) dot += dn[c] * n[c];
  const S k = dot / static_cast<S>(C) / g;
  for (int64_t c = 0; c < C; ++c) {
    const S part = r * (g * dn[c] - n[c] * k);
    dy[c] = dy[c] + part;
  }
}

// Row `row` of an (N, C) f32|bf16 tensor to/from float. store: out = v, or out += v in float.
void load_row(const char* op, const Tensor& t, int64_t row, int64_t C, float* out) {
  cpu::visit_fb(op, "row", t, [&](auto* p) {
    for (int64_t c = 0; c < C; ++c) out[c] = ld<float>(p[row * C + c]);
  });
}
void store_row(const char* op, const Tensor& t, int64_t row, int64_t C, const float* v, bool accumulate) {
  cpu::visit_fb(op, "row", t, [&](auto* p) {
    for (int64_t c = 0; c < C; ++c) st(p[row * C + c], accumulate ? ld<float>(p[row * C + c]) + v[c] : v[c]);
  });
}

void check_stream(const char* op, const char* arg, const Tensor& t, const Shape& s) {
  cpu::check_f32(op, arg, t);
  check_shape(op, arg, t, s);
}
void check_act(const char* op, const char* arg, const Tensor& t, const Shape& s) {
  cpu::check_fb(op, arg, t);
  check_shape(op, arg, t, s);
}
void check_chan(const char* op, const char* arg, const Tensor& t, int64_t C) {
  cpu::check_f32(op, arg, t);
  check_shape(op, arg, t, Shape{C});
}
void check_no_alias(const char* op, const char* arg, const Tensor& t, std::initializer_list<const Tensor*> others) {
  if (!t.defined()) return;
  for (const Tensor* o : others)
    PG_CHECK(!o->defined() || o->data() != t.data(), "{}: {} {} may not alias another operand", op, arg, t.desc());
}

// The checks both backward forms share: n, rstd, dn, dy and g.
void check_norm_grads(const char* op, const Tensor& n, const Tensor& rstd, const Tensor& dn, const Tensor& dy, float g) {
  cpu::check_fb(op, "n", n);
  check_ndim(op, "n", n, 2);
  check_stream(op, "rstd", rstd, Shape{n.dim(0)});
  if (dn.defined()) check_act(op, "dn", dn, n.shape());
  check_stream(op, "dy", dy, n.shape());
  PG_CHECK(g != 0.f && std::isfinite(g), "{}: the gain g = {} must be finite and non-zero", op, g);
}

}  // namespace

void add_rmsnorm_forward(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& y, const Tensor& n,
                         const Tensor& rstd, float g, float eps) {
  const char* op = "add_rmsnorm_forward";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  const int64_t N = x.dim(0), C = x.dim(1);
  check_chan(op, "s", s, C);
  check_act(op, "f", f, x.shape());
  check_stream(op, "y", y, x.shape());
  check_act(op, "n", n, x.shape());
  check_stream(op, "rstd", rstd, Shape{N});
  check_no_alias(op, "n", n, {&x, &f, &y});
  check_no_alias(op, "f", f, {&y});
  if (check_same_device(op, {&x, &s, &f, &y, &n, &rstd}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::add_rmsnorm_forward(x, s, f, y, n, rstd, g, eps));
    return;
  }
  const float* sp = s.ptr<float>();
  std::vector<float> xr(static_cast<size_t>(C)), fr(xr), nr(xr);
  float* yp = y.ptr<float>();
  for (int64_t row = 0; row < N; ++row) {
    load_row(op, x, row, C, xr.data());
    load_row(op, f, row, C, fr.data());
    float* yr = yp + row * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] + sp[c] * fr[c];
    rstd.ptr<float>()[row] = norm_row<float>(yr, nr.data(), C, g, eps);
    store_row(op, n, row, C, nr.data(), false);
  }
}

void mix_rmsnorm_forward(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& y,
                         const Tensor& n, const Tensor& rstd, float g, float eps) {
  const char* op = "mix_rmsnorm_forward";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  const int64_t N = x.dim(0), C = x.dim(1);
  check_chan(op, "a", a, C);
  check_chan(op, "b", b, C);
  check_act(op, "x0", x0, x.shape());
  check_stream(op, "y", y, x.shape());
  check_act(op, "n", n, x.shape());
  check_stream(op, "rstd", rstd, Shape{N});
  check_no_alias(op, "n", n, {&x, &x0, &y});
  check_no_alias(op, "x0", x0, {&y});
  if (check_same_device(op, {&a, &x, &b, &x0, &y, &n, &rstd}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::mix_rmsnorm_forward(a, x, b, x0, y, n, rstd, g, eps));
    return;
  }
  const float *ap = a.ptr<float>(), *bp = b.ptr<float>();
  std::vector<float> xr(static_cast<size_t>(C)), x0r(xr), nr(xr);
  float* yp = y.ptr<float>();
  for (int64_t row = 0; row < N; ++row) {
    load_row(op, x, row, C, xr.data());
    load_row(op, x0, row, C, x0r.data());
    float* yr = yp + row * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = ap[c] * xr[c] + bp[c] * x0r[c];
    rstd.ptr<float>()[row] = norm_row<float>(yr, nr.data(), C, g, eps);
    store_row(op, n, row, C, nr.data(), false);
  }
}

void add_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& s,
                          const Tensor& f, const Tensor& dy, const Tensor& ds, const Tensor& df, bool accumulate) {
  const char* op = "add_rmsnorm_backward";
  check_norm_grads(op, n, rstd, dn, dy, g);
  const int64_t N = n.dim(0), C = n.dim(1);
  check_chan(op, "s", s, C);
  check_act(op, "f", f, n.shape());
  check_chan(op, "ds", ds, C);
  if (df.defined()) check_act(op, "df", df, n.shape());
  check_no_alias(op, "df", df, {&dy, &n, &dn, &f});
  check_no_alias(op, "dy", dy, {&n, &dn, &f});
  if (check_same_device(op, {&n, &rstd, &dn, &s, &f, &dy, &ds, &df}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::add_rmsnorm_backward(n, rstd, dn, g, s, f, dy, ds, df, accumulate));
    return;
  }
  const float* sp = s.ptr<float>();
  std::vector<float> nr(static_cast<size_t>(C)), dnr(nr), fr(nr), dfr(nr);
  std::vector<double> acc(static_cast<size_t>(C), 0.0);
  for (int64_t row = 0; row < N; ++row) {
    float* d = dy.ptr<float>() + row * C;
    if (dn.defined()) {
      load_row(op, n, row, C, nr.data());
      load_row(op, dn, row, C, dnr.data());
      norm_back_row<float>(nr.data(), dnr.data(), rstd.ptr<float>()[row], g, d, C);
    }
    load_row(op, f, row, C, fr.data());
    for (int64_t c = 0; c < C; ++c) {
      acc[static_cast<size_t>(c)] += static_cast<double>(d[c]) * static_cast<double>(fr[c]);
      dfr[c] = sp[c] * d[c];
    }
    if (df.defined()) store_row(op, df, row, C, dfr.data(), accumulate);
  }
  float* dsp = ds.ptr<float>();
  for (int64_t c = 0; c < C; ++c) dsp[c] += static_cast<float>(acc[static_cast<size_t>(c)]);
}

void mix_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& a,
                          const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& dy, const Tensor& da,
                          const Tensor& db, const Tensor& dx, bool acc_x, const Tensor& dx0, bool acc_x0) {
  const char* op = "mix_rmsnorm_backward";
  check_norm_grads(op, n, rstd, dn, dy, g);
  const int64_t N = n.dim(0), C = n.dim(1);
  check_chan(op, "a", a, C);
  check_chan(op, "b", b, C);
  check_act(op, "x", x, n.shape());
  check_act(op, "x0", x0, n.shape());
  check_chan(op, "da", da, C);
  check_chan(op, "db", db, C);
  if (dx.defined()) check_act(op, "dx", dx, n.shape());
  if (dx0.defined()) check_act(op, "dx0", dx0, n.shape());
  check_no_alias(op, "dx", dx, {&dy, &n, &dn, &x, &x0});
  check_no_alias(op, "dx0", dx0, {&dy, &n, &dn, &x, &x0});
  check_no_alias(op, "dy", dy, {&n, &dn, &x, &x0});
  if (check_same_device(op, {&n, &rstd, &dn, &a, &x, &b, &x0, &dy, &da, &db, &dx, &dx0}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::mix_rmsnorm_backward(n, rstd, dn, g, a, x, b, x0, dy, da, db, dx, acc_x, dx0, acc_x0));
    return;
  }
  const float *ap = a.ptr<float>(), *bp = b.ptr<float>();
  std::vector<float> nr(static_cast<size_t>(C)), dnr(nr), d(nr), xr(nr), x0r(nr), o(nr);
  std::vector<double> acc_a(static_cast<size_t>(C), 0.0), acc_b(acc_a);
  for (int64_t row = 0; row < N; ++row) {
    const float* dyr = dy.ptr<float>() + row * C;
    d.assign(dyr, dyr + C);  // dy itself is left as it came (the header allows either)
    if (dn.defined()) {
      load_row(op, n, row, C, nr.data());
      load_row(op, dn, row, C, dnr.data());
      norm_back_row<float>(nr.data(), dnr.data(), rstd.ptr<float>()[row], g, d.data(), C);
    }
    load_row(op, x, row, C, xr.data());
    load_row(op, x0, row, C, x0r.data());
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(c);
      acc_a[i] += static_cast<double>(d[i]) * static_cast<double>(xr[i]);
      acc_b[i] += static_cast<double>(d[i]) * static_cast<double>(x0r[i]);
    }
    // dx before dx0: when they are one tensor, dx0's add reads what dx just wrote.
    if (dx.defined()) {
      for (int64_t c = 0; c < C; ++c) o[static_cast<size_t>(c)] = ap[c] * d[static_cast<size_t>(c)];
      store_row(op, dx, row, C, o.data(), acc_x);
    }
    if (dx0.defined()) {
      for (int64_t c = 0; c < C; ++c) o[static_cast<size_t>(c)] = bp[c] * d[static_cast<size_t>(c)];
      store_row(op, dx0, row, C, o.data(), acc_x0);
    }
  }
  float *dap = da.ptr<float>(), *dbp = db.ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    dap[c] += static_cast<float>(acc_a[static_cast<size_t>(c)]);
    dbp[c] += static_cast<float>(acc_b[static_cast<size_t>(c)]);
  }
}

namespace ref {

void add_rmsnorm_forward(const double* x, const double* s, const double* f, double* y, double* n, double* rstd,
                         int64_t N, int64_t C, double g, double eps) {
  for (int64_t row = 0; row < N; ++row) {
    for (int64_t c = 0; c < C; ++c) y[row * C + c] = x[row * C + c] + s[c] * f[row * C + c];
    rstd[row] = norm_row<double>(y + row * C, n + row * C, C, g, eps);
  }
}

void mix_rmsnorm_forward(const double* a, const double* x, const double* b, const double* x0, double* y, double* n,
                         double* rstd, int64_t N, int64_t C, double g, double eps) {
  for (int64_t row = 0; row < N; ++row) {
    for (int64_t c = 0; c < C; ++c) y[row * C + c] = a[c] * x[row * C + c] + b[c] * x0[row * C + c];
    rstd[row] = norm_row<double>(y + row * C, n + row * C, C, g, eps);
  }
}

void add_rmsnorm_backward(const double* n, const double* rstd, const double* dn, double g, const double* s,
                          const double* f, double* dy, double* ds, double* df, int64_t N, int64_t C) {
  for (int64_t row = 0; row < N; ++row) {
    double* d = dy + row * C;
    if (dn) norm_back_row<double>(n + row * C, dn + row * C, rstd[row], g, d, C);
    for (int64_t c = 0; c < C; ++c) {
      ds[c] += d[c] * f[row * C + c];
      if (df) df[row * C + c] = s[c] * d[c];
    }
  }
}

void mix_rmsnorm_backward(const double* n, const double* rstd, const double* dn, double g, const double* a,
                          const double* x, const double* b, const double* x0, double* dy, double* da, double* db,
                          double* dx, double* dx0, int64_t N, int64_t C) {
  for (int64_t row = 0; row < N; ++row) {
    double* d = dy + row * C;
    if (dn) norm_back_row<double>(n + row * C, dn + row * C, rstd[row], g, d, C);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = row * C + c;
      da[c] += d[c] * x[i];
      db[c] += d[c] * x0[i];
      if (dx) dx[i] = a[c] * d[c];
      if (dx0) dx0[i] = b[c] * d[c];
    }
  }
}

}  // namespace ref

}  // namespace pgolf::ops
