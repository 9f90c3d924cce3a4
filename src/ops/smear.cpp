#include "ops/smear.h"

#include <cmath>
#include <type_traits>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

template <class S> S sigmoid(S z) { return S(1) / (S(1) + std::exp(-z)); }

template <class S, class E, class P>
void v1_fwd(const E* x, const P* gate, E* out, int64_t B, int64_t T, int64_t C) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * T + t) * C + c;
        const S s = sigmoid<S>(ld<S>(gate[c]));
        const S prev = t > 0 ? ld<S>(x[i - C]) : S(0);
        st(out[i], (S(1) - s) * ld<S>(x[i]) + s * prev);
      }
}

template <class S, class E, class P>
void v1_bwd(const E* x, const P* gate, const E* dout, E* dx, P* dgate, int64_t B, int64_t T, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const S s = sigmoid<S>(ld<S>(gate[c]));
    S acc = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * C + c;
        const S go = ld<S>(dout[i]);
        const S prev = t > 0 ? ld<S>(x[i - C]) : S(0);
        acc += (prev - ld<S>(x[i])) * go;
        const S next = t + 1 < T ? ld<S>(dout[i + C]) : S(0);
        st(dx[i], (S(1) - s) * go + s * next);
      }
    st(dgate[c], ld<S>(dgate[c]) + s * (S(1) - s) * acc);
  }
}

// The gate of token i (row-major index over B*T): sigmoid(w . e[i, 0:W]).
template <class S, class E, class P>
S v2_gate(const E* e, const P* w, int64_t i, int64_t C, int64_t W) {
  S z = 0;
  for (int64_t c = 0; c < W; ++c) z += ld<S>(w[c]) * ld<S>(e[i * C + c]);
  return sigmoid<S>(z);
}

template <class S, class E, class P>
void v2_fwd(const E* e, const int32_t* ids, const P* w, S lambda, int bos, E* out, int64_t B, int64_t T, int64_t C,
            int64_t W) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      const bool m = t >= 1 && ids[i] != bos;
      const S k = m ? lambda * v2_gate<S>(e, w, i, C, W) : S(0);
      for (int64_t c = 0; c < C; ++c)
        st(out[i * C + c], ld<S>(e[i * C + c]) + (m ? k * ld<S>(e[(i - 1) * C + c]) : S(0)));
    }
}

template <class S, class E, class P>
void v2_bwd(const E* e, const int32_t* ids, const P* w, S lambda, int bos, const E* dout, E* de, P* dw, P* dlambda,
            int64_t B, int64_t T, int64_t C, int64_t W) {
  S dl = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      const bool m = t >= 1 && ids[i] != bos;
      const bool m_next = t + 1 < T && ids[i + 1] != bos;
      const S g = m ? v2_gate<S>(e, w, i, C, W) : S(0);
      const S k_next = m_next ? lambda * v2_gate<S>(e, w, i + 1, C, W) : S(0);
      S a = 0;  // e[t-1] . dout[t]
      if (m)
        for (int64_t c = 0; c < C; ++c) a += ld<S>(e[(i - 1) * C + c]) * ld<S>(dout[i * C + c]);
      const S dz = m ? lambda * g * (S(1) - g) * a : S(0);  // d loss / d (w . e[t, 0:W])
      dl += g * a;
      for (int64_t c = 0; c < C; ++c) {
        S v = ld<S>(dout[i * C + c]);
        if (m_next) v += k_next * ld<S>(dout[(i + 1) * C + c]);
        if (c < W) {
          v += dz * ld<S>(w[c]);
          st(dw[c], ld<S>(dw[c]) + dz * ld<S>(e[i * C + c]));
        }
        st(de[i * C + c], v);
      }
    }
  st(dlambda[0], ld<S>(dlambda[0]) + dl);
}

struct Btc {
  int64_t B, T, C;
};

Btc check_btc(const char* op, const char* name, const Tensor& x) {
  cpu::check_fb(op, name, x);
  check_ndim(op, name, x, 3);
  return Btc{x.dim(0), x.dim(1), x.dim(2)};
}

void check_like(const char* op, const char* name, const Tensor& t, const char* ref_name, const Tensor& ref) {
  check_defined(op, name, t);
  PG_CHECK(t.dtype() == ref.dtype() && t.shape() == ref.shape(), "{}: {} {} must match {} {}", op, name, t.desc(),
           ref_name, ref.desc());
}

void check_vec(const char* op, const char* name, const Tensor& t, int64_t n) {
  cpu::check_f32(op, name, t);
  check_shape(op, name, t, Shape{n});
}

int64_t check_v2(const char* op, const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda) {
  const Btc d = check_btc(op, "e", e);
  check_defined(op, "ids", ids);
  check_dtype(op, "ids", ids, {DType::I32});
  check_shape(op, "ids", ids, Shape{d.B, d.T});
  cpu::check_f32(op, "w", w);
  check_ndim(op, "w", w, 1);
  const int64_t W = w.dim(0);
  PG_CHECK(W >= 1 && W <= d.C && W <= 32, "{}: gate window {} must be in 1..min(C = {}, 32)", op, W, d.C);
  check_vec(op, "lambda", lambda, 1);
  return W;
}

}  // namespace

void smear_v1_forward(const Tensor& x, const Tensor& gate, const Tensor& out) {
  const char* op = "smear_v1_forward";
  const Btc d = check_btc(op, "x", x);
  check_vec(op, "gate", gate, d.C);
  check_like(op, "out", out, "x", x);
  if (check_same_device(op, {&x, &gate, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::smear_v1_forward(x, gate, out));
    return;
  }
  PG_CHECK(x.data() != out.data(), "{}: out must not alias x", op);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    using E = std::remove_pointer_t<decltype(xp)>;
    v1_fwd<float>(xp, gate.ptr<float>(), static_cast<E*>(out.data()), d.B, d.T, d.C);
  });
}

void smear_v1_backward(const Tensor& x, const Tensor& gate, const Tensor& dout, const Tensor& dx, const Tensor& dgate) {
  const char* op = "smear_v1_backward";
  const Btc d = check_btc(op, "x", x);
  check_vec(op, "gate", gate, d.C);
  check_like(op, "dout", dout, "x", x);
  check_like(op, "dx", dx, "x", x);
  check_vec(op, "dgate", dgate, d.C);
  if (check_same_device(op, {&x, &gate, &dout, &dx, &dgate}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::smear_v1_backward(x, gate, dout, dx, dgate));
    return;
  }
  PG_CHECK(dx.data() != dout.data(), "{}: dx must not alias dout", op);
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    using E = std::remove_pointer_t<decltype(xp)>;
    v1_bwd<float>(xp, gate.ptr<float>(), static_cast<const E*>(dout.data()), static_cast<E*>(dx.data()),
                  dgate.ptr<float>(), d.B, d.T, d.C);
  });
}

void smear_v2_forward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                      const Tensor& out) {
  const char* op = "smear_v2_forward";
  const int64_t W = check_v2(op, e, ids, w, lambda);
  check_like(op, "out", out, "e", e);
  if (check_same_device(op, {&e, &ids, &w, &lambda, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::smear_v2_forward(e, ids, w, lambda, bos, out));
    return;
  }
  PG_CHECK(e.data() != out.data(), "{}: out must not alias e", op);
  cpu::visit_fb(op, "e", e, [&](auto* ep) {
    using E = std::remove_pointer_t<decltype(ep)>;
    v2_fwd<float>(ep, ids.ptr<int32_t>(), w.ptr<float>(), lambda.ptr<float>()[0], bos, static_cast<E*>(out.data()),
                  e.dim(0), e.dim(1), e.dim(2), W);
  });
}

void smear_v2_backward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                       const Tensor& dout, const Tensor& de, const Tensor& dw, const Tensor& dlambda) {
  const char* op = "smear_v2_backward";
  const int64_t W = check_v2(op, e, ids, w, lambda);
  check_like(op, "dout", dout, "e", e);
  check_like(op, "de", de, "e", e);
  check_vec(op, "dw", dw, W);
  check_vec(op, "dlambda", dlambda, 1);
  if (check_same_device(op, {&e, &ids, &w, &lambda, &dout, &de, &dw, &dlambda}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::smear_v2_backward(e, ids, w, lambda, bos, dout, de, dw, dlambda));
    return;
  }
  PG_CHECK(de.data() != dout.data(), "{}: de must not alias dout", op);
  cpu::visit_fb(op, "e", e, [&](auto* ep) {
    using E = std::remove_pointer_t<decltype(ep)>;
    v2_bwd<float>(ep, ids.ptr<int32_t>(), w.ptr<float>(), lambda.ptr<float>()[0], bos,
                  static_cast<const E*>(dout.data()), static_cast<E*>(de.data()), dw.ptr<float>(),
                  dlambda.ptr<float>(), e.dim(0), e.dim(1), e.dim(2), W);
  });
}

namespace ref {
void smear_v1_forward(const double* x, const double* gate, double* out, int64_t B, int64_t T, int64_t C) {
  v1_fwd<double>(x, gate, out, B, T, C);
}
void smear_v1_backward(const double* x, const double* gate, const double* dout, double* dx, double* dgate, int64_t B,
                       int64_t T, int64_t C) {
  v1_bwd<double>(x, gate, dout, dx, dgate, B, T, C);
}
void smear_v2_forward(const double* e, const int32_t* ids, const double* w, double lambda, int bos, double* out,
                      int64_t B, int64_t T, int64_t C, int64_t W) {
  v2_fwd<double>(e, ids, w, lambda, bos, out, B, T, C, W);
}
void smear_v2_backward(const double* e, const int32_t* ids, const double* w, double lambda, int bos,
                       const double* dout, double* de, double* dw, double* dlambda, int64_t B, int64_t T, int64_t C,
                       int64_t W) {
  v2_bwd<double>(e, ids, w, lambda, bos, dout, de, dw, dlambda, B, T, C, W);
}
}  // namespace ref

}  // namespace pgolf::ops
