#pragma once
// A learned scalar interpolation (value residual learning, TECHNIQUES.md §5.11):
//   s = sigmoid(a) ;  out = (1 - s) x + s y
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// a: (1) f32 ; x, y, out: same numel, f32|bf16 each ; out may alias neither input.
void sigmoid_lerp_forward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& out);
// dx = (1 - s) dout, dy = s dout (OVERWRITTEN, like x / y; each may be undefined) ;
// da (1) f32 ACCUMULATED += s (1 - s) sum(dout (y - x)).
void sigmoid_lerp_backward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& dout, const Tensor& dx,
                           const Tensor& dy, const Tensor& da);

namespace ref {  // double precision, for finite-difference tests
void sigmoid_lerp_forward(double a, const double* x, const double* y, double* out, int64_t n);
void sigmoid_lerp_backward(double a, const double* x, const double* y, const double* dout, double* dx, double* dy,
                           double* da, int64_t n);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void sigmoid_lerp_forward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& out);
void sigmoid_lerp_backward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& dout, const Tensor& dx,
                           const Tensor& dy, const Tensor& da);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
