#pragma once
// SmearGate (TECHNIQUES.md §5.8): each token's embedding borrows from the previous token's, within a
// row of the batch (position 0 has no predecessor). Two different modules share the name.
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// v1, a static per-channel blend. x, out: (B, T, C) f32|bf16, same dtype ; gate: (C) f32.
//   s = sigmoid(gate) ;  out[b, t] = (1 - s) x[b, t] + s x[b, t-1]   (x[b, -1] = 0)
void smear_v1_forward(const Tensor& x, const Tensor& gate, const Tensor& out);
// dx (OVERWRITTEN, like x; no aliasing) ; dgate (C) f32 ACCUMULATED.
void smear_v1_backward(const Tensor& x, const Tensor& gate, const Tensor& dout, const Tensor& dx, const Tensor& dgate);

// v2, input-dependent and stopped at document starts. e, out: (B, T, C) f32|bf16, same dtype ;
// ids: (B, T) i32 ; w: (W) f32 with W <= min(C, 32) ; lambda: (1) f32.
//   g_t = sigmoid(w . e[b, t, 0:W]) ;  m_t = (t >= 1 and ids[b, t] != bos)
//   out[b, t] = e[b, t] + lambda g_t m_t e[b, t-1]
void smear_v2_forward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                      const Tensor& out);
// de (OVERWRITTEN, like e; no aliasing) ; dw (W), dlambda (1) f32 ACCUMULATED.
void smear_v2_backward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                       const Tensor& dout, const Tensor& de, const Tensor& dw, const Tensor& dlambda);

namespace ref {  // double precision, contiguous arrays, for finite-difference tests
void smear_v1_forward(const double* x, const double* gate, double* out, int64_t B, int64_t T, int64_t C);
void smear_v1_backward(const double* x, const double* gate, const double* dout, double* dx, double* dgate, int64_t B,
                       int64_t T, int64_t C);
void smear_v2_forward(const double* e, const int32_t* ids, const double* w, double lambda, int bos, double* out,
                      int64_t B, int64_t T, int64_t C, int64_t W);
void smear_v2_backward(const double* e, const int32_t* ids, const double* w, double lambda, int bos,
                       const double* dout, double* de, double* dw, double* dlambda, int64_t B, int64_t T, int64_t C,
                       int64_t W);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void smear_v1_forward(const Tensor& x, const Tensor& gate, const Tensor& out);
void smear_v1_backward(const Tensor& x, const Tensor& gate, const Tensor& dout, const Tensor& dx, const Tensor& dgate);
void smear_v2_forward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                      const Tensor& out);
void smear_v2_backward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                       const Tensor& dout, const Tensor& de, const Tensor& dw, const Tensor& dlambda);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
