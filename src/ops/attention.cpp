#include "ops/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/attention_cpu.h"
#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

struct Dims {
  int64_t B, T, Hq, Hkv, D;
};

// Every mask leaves query i a contiguous key range [lo, hi] (empty when lo > hi):
// causal j <= i ; window i - window < j <= i ; documents j >= doc_start[b, i].
void key_range(const AttnParams& p, const int32_t* doc_row, int64_t i, int64_t T, int64_t* lo, int64_t* hi) {
  int64_t l = 0, h = T - 1;
  if (p.causal || p.window > 0) h = i;
  if (p.window > 0) l = std::max<int64_t>(l, i - p.window + 1);
  if (doc_row) l = std::max<int64_t>(l, doc_row[i]);
  *lo = l;
  *hi = h;
}

template <class S> S attn_scale(const AttnParams& p, int64_t D) {
  return p.scale > 0.f ? static_cast<S>(p.scale) : S(1) / std::sqrt(static_cast<S>(D));
}

// a . b with 8 independent partial sums, so the compiler can vectorise the reduction without
// -ffast-math (the hot loop of the CPU attention).
template <class S, class T> S dot_row(const S* a, const T* b, int64_t n) {
  S part[8] = {};
  int64_t e = 0;
  for (; e + 8 <= n; e += 8)
    for (int u = 0; u < 8; ++u) part[u] += a[e + u] * ld<S>(b[e + u]);
  S s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; e < n; ++e) s += a[e] * ld<S>(b[e]);
  return s;
}

// The plain single-threaded kernels, kept as the double-precision reference (ops/reference.h);
// the tensor ops run the fast f32 kernels of ops/attention_cpu.cpp.
// One query row at a time: scores over its visible keys, stable softmax, weighted sum of values.
template <class S, class T, class TL>
void attn_fwd_kernel(const T* q, const T* k, const T* v, const int32_t* doc, T* out, TL* lse, const Dims& d,
                     const AttnParams& p) {
  const S scale = attn_scale<S>(p, d.D);
  const int64_t group = d.Hq / d.Hkv;
  std::vector<S> qs(static_cast<size_t>(d.D)), acc(static_cast<size_t>(d.D)), s(static_cast<size_t>(d.T));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < d.T; ++i) {
        const T* qr = q + ((b * d.T + i) * d.Hq + h) * d.D;
        T* orow = out + ((b * d.T + i) * d.Hq + h) * d.D;
        TL* lrow = lse + (b * d.Hq + h) * d.T + i;
        int64_t lo, hi;
        key_range(p, doc ? doc + b * d.T : nullptr, i, d.T, &lo, &hi);
        if (lo > hi) {  // nothing visible: zero output, lse -inf (the backward skips the row)
          for (int64_t e = 0; e < d.D; ++e) st(orow[e], S(0));
          st(*lrow, -std::numeric_limits<S>::infinity());
          continue;
        }
        for (int64_t e = 0; e < d.D; ++e) qs[e] = ld<S>(qr[e]);
        S m = -std::numeric_limits<S>::infinity();
        for (int64_t j = lo; j <= hi; ++j) {
          const T* kr = k + ((b * d.T + j) * d.Hkv + kh) * d.D;
          s[j] = scale * dot_row(qs.data(), kr, d.D);
          m = std::max(m, s[j]);
        }
        S l = 0;
        std::fill(acc.begin(), acc.end(), S(0));
        for (int64_t j = lo; j <= hi; ++j) {
          const T* vr = v + ((b * d.T + j) * d.Hkv + kh) * d.D;
          S pj = std::exp(s[j] - m);
          l += pj;
          for (int64_t e = 0; e < d.D; ++e) acc[e] += pj * ld<S>(vr[e]);
        }
        for (int64_t e = 0; e < d.D; ++e) st(orow[e], acc[e] / l);
        st(*lrow, m + std::log(l));
      }
    }
}

// Softmax backward with P recomputed from lse: dS = P (dP - D_i), D_i = dout_i . out_i.
// dk and dv sum over query rows and over the query heads of a kv group, so they are
// accumulated in S buffers and stored once.
template <class S, class T, class TL>
void attn_bwd_kernel(const T* q, const T* k, const T* v, const int32_t* doc, const T* out, const TL* lse,
                     const T* dout, T* dq, T* dk, T* dv, const Dims& d, const AttnParams& p) {
  const S scale = attn_scale<S>(p, d.D);
  const int64_t group = d.Hq / d.Hkv;
  const size_t kv_n = static_cast<size_t>(d.B * d.T * d.Hkv * d.D);
  std::vector<S> dk_acc(kv_n, S(0)), dv_acc(kv_n, S(0));
  std::vector<S> qs(static_cast<size_t>(d.D)), dos(static_cast<size_t>(d.D)), dq_acc(static_cast<size_t>(d.D));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < d.T; ++i) {
        const int64_t row = ((b * d.T + i) * d.Hq + h) * d.D;
        std::fill(dq_acc.begin(), dq_acc.end(), S(0));
        int64_t lo, hi;
        key_range(p, doc ? doc + b * d.T : nullptr, i, d.T, &lo, &hi);
        const S L = ld<S>(lse[(b * d.Hq + h) * d.T + i]);
        if (lo <= hi && std::isfinite(L)) {
          S Di = 0;
          for (int64_t e = 0; e < d.D; ++e) {
            qs[e] = ld<S>(q[row + e]);
            dos[e] = ld<S>(dout[row + e]);
            Di += dos[e] * ld<S>(out[row + e]);
          }
          for (int64_t j = lo; j <= hi; ++j) {
            const int64_t kv = ((b * d.T + j) * d.Hkv + kh) * d.D;
            const S sdot = dot_row(qs.data(), k + kv, d.D), dp = dot_row(dos.data(), v + kv, d.D);
            const S pj = std::exp(scale * sdot - L);
            const S ds = pj * (dp - Di) * scale;
            for (int64_t e = 0; e < d.D; ++e) {
              dq_acc[e] += ds * ld<S>(k[kv + e]);
              dk_acc[kv + e] += ds * qs[e];
              dv_acc[kv + e] += pj * dos[e];
            }
          }
        }
        for (int64_t e = 0; e < d.D; ++e) st(dq[row + e], dq_acc[e]);
      }
    }
  for (size_t e = 0; e < kv_n; ++e) {
    st(dk[e], dk_acc[e]);
    st(dv[e], dv_acc[e]);
  }
}

Dims check_attn(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                const Tensor& out, const Tensor& lse, const AttnParams& p) {
  cpu::check_fb(op, "q", q);
  check_ndim(op, "q", q, 4);
  check_defined(op, "k", k);
  check_ndim(op, "k", k, 4);
  Dims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3)};
  PG_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0, "{}: q is {} and k is {}: query heads must be a multiple of kv heads",
           op, q.desc(), k.desc());
  Shape kv{d.B, d.T, d.Hkv, d.D};
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"k", &k}, {"v", &v}, {"out", &out}}) {
    check_defined(op, name, *t);
    PG_CHECK(t->dtype() == q.dtype(), "{}: {} is {} but q is {}: they must share a dtype", op, name, t->desc(),
             q.desc());
  }
  check_shape(op, "k", k, kv);
  check_shape(op, "v", v, kv);
  check_shape(op, "out", out, q.shape());
  cpu::check_f32(op, "lse", lse);
  check_shape(op, "lse", lse, Shape{d.B, d.Hq, d.T});
  if (doc_start.defined()) {
    check_dtype(op, "doc_start", doc_start, {DType::I32});
    check_shape(op, "doc_start", doc_start, Shape{d.B, d.T});
  }
  PG_CHECK(p.window >= 0, "{}: window {} is negative", op, p.window);
  PG_CHECK(p.scale >= 0.f, "{}: scale {} is negative (0 means 1/sqrt(head_dim))", op, p.scale);
  return d;
}

const int32_t* doc_ptr(const Tensor& doc_start) {
  return doc_start.defined() ? doc_start.ptr<int32_t>() : nullptr;
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                       const Tensor& out, const Tensor& lse, const AttnParams& p) {
  const char* op = "attention_forward";
  Dims d = check_attn(op, q, k, v, doc_start, out, lse, p);
  if (check_same_device(op, {&q, &k, &v, &doc_start, &out, &lse}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::attention_forward(q, k, v, doc_start, out, lse, p));
    return;
  }
  cpu::visit_fb(op, "q", q, [&](auto* qp) {
    using T = std::remove_pointer_t<decltype(qp)>;
    cpu::attention_forward_fast(qp, static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
                                doc_ptr(doc_start), static_cast<T*>(out.data()), lse.ptr<float>(),
                                cpu::AttnDims{d.B, d.T, d.Hq, d.Hkv, d.D}, p);
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                        const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const AttnParams& p) {
  const char* op = "attention_backward";
  Dims d = check_attn(op, q, k, v, doc_start, out, lse, p);
  for (auto [name, t, like] : {std::tuple<const char*, const Tensor*, const Tensor*>{"dout", &dout, &out},
                               {"dq", &dq, &q}, {"dk", &dk, &k}, {"dv", &dv, &v}}) {
    check_defined(op, name, *t);
    PG_CHECK(t->dtype() == like->dtype(), "{}: {} is {} but must have the dtype of {}", op, name, t->desc(),
             like->desc());
    check_shape(op, name, *t, like->shape());
  }
  if (check_same_device(op, {&q, &k, &v, &doc_start, &out, &lse, &dout, &dq, &dk, &dv}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::attention_backward(q, k, v, doc_start, out, lse, dout, dq, dk, dv, p));
    return;
  }
  cpu::visit_fb(op, "q", q, [&](auto* qp) {
    using T = std::remove_pointer_t<decltype(qp)>;
    cpu::attention_backward_fast(qp, static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
                                 doc_ptr(doc_start), static_cast<const T*>(out.data()), lse.ptr<float>(),
                                 static_cast<const T*>(dout.data()), static_cast<T*>(dq.data()),
                                 static_cast<T*>(dk.data()), static_cast<T*>(dv.data()),
                                 cpu::AttnDims{d.B, d.T, d.Hq, d.Hkv, d.D}, p);
  });
}

namespace {
std::atomic<AttnFwdKernel> g_fwd_kernel{AttnFwdKernel::Auto};
std::atomic<AttnBwdKernel> g_bwd_kernel{AttnBwdKernel::Auto};
}  // namespace
void set_attention_fwd_kernel(AttnFwdKernel k) { g_fwd_kernel.store(k); }
AttnFwdKernel attention_fwd_kernel_override() { return g_fwd_kernel.load(); }
const char* attn_fwd_kernel_name(AttnFwdKernel k) {
  switch (k) {
    case AttnFwdKernel::Mma: return "mma";
    case AttnFwdKernel::Wgmma64: return "wgmma64";
    case AttnFwdKernel::Wgmma128: return "wgmma128";
    default: return "auto";
  }
}
void set_attention_bwd_kernel(AttnBwdKernel k) { g_bwd_kernel.store(k); }
AttnBwdKernel attention_bwd_kernel_override() { return g_bwd_kernel.load(); }
const char* attn_bwd_kernel_name(AttnBwdKernel k) {
  switch (k) {
    case AttnBwdKernel::V1: return "v1";
    case AttnBwdKernel::Wgmma128: return "wgmma128";
    case AttnBwdKernel::Wgmma64: return "wgmma64";
    case AttnBwdKernel::WgmmaDqMma: return "wgmma-dqmma";
    default: return "auto";
  }
}

namespace ref {
void attention_forward(const double* q, const double* k, const double* v, const int32_t* doc_start, double* out,
                       double* lse, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const AttnParams& p) {
  attn_fwd_kernel<double>(q, k, v, doc_start, out, lse, Dims{B, T, Hq, Hkv, D}, p);
}
void attention_backward(const double* q, const double* k, const double* v, const int32_t* doc_start,
                        const double* out, const double* lse, const double* dout, double* dq, double* dk,
                        double* dv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const AttnParams& p) {
  attn_bwd_kernel<double>(q, k, v, doc_start, out, lse, dout, dq, dk, dv, Dims{B, T, Hq, Hkv, D}, p);
}
}  // namespace ref

}  // namespace pgolf::ops
