#pragma once
// XSA, exclusive self-attention (TECHNIQUES.md §5.7): removes from each head's attention output the
// component along that token's own (normalized) value vector. GQA: query head h reads kv head
// h / (Hq / Hkv). No parameters.
//   vh = v[b,t,kv] / max(|v[b,t,kv]|, 1e-12) ;  out[b,t,h] = y[b,t,h] - (y[b,t,h] . vh) vh
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

constexpr double kXsaNormEps = 1e-12;  // as F.normalize

// y, out: (B, T, Hq, D) ; v: (B, T, Hkv, D) ; all the same dtype (f32|bf16). out may alias y.
void xsa_forward(const Tensor& y, const Tensor& v, const Tensor& out);
// dy (OVERWRITTEN, like y) = P dout with P = I - vh vh^T ; dv (OVERWRITTEN, like v) =
// (dvh - vh (vh . dvh)) / |v| with dvh = -sum over the group [(y . vh) dout + (dout . vh) y].
// dy may alias dout; nothing else may alias.
void xsa_backward(const Tensor& y, const Tensor& v, const Tensor& dout, const Tensor& dy, const Tensor& dv);

namespace ref {  // double precision, contiguous arrays, for finite-difference tests
void xsa_forward(const double* y, const double* v, double* out, int64_t rows, int64_t Hq, int64_t Hkv, int64_t D);
void xsa_backward(const double* y, const double* v, const double* dout, double* dy, double* dv, int64_t rows,
                  int64_t Hq, int64_t Hkv, int64_t D);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void xsa_forward(const Tensor& y, const Tensor& v, const Tensor& out);
void xsa_backward(const Tensor& y, const Tensor& v, const Tensor& dout, const Tensor& dy, const Tensor& dv);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
