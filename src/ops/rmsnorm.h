#pragma once
// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) [* gain].
#include "core/tensor.h"

namespace pgolf::ops {

// x: (N, C) f32|bf16 ; gain: (C) f32 or undefined (weightless) ; y: (N, C) f32|bf16 (may alias x) ;
// rstd: (N) f32, receives 1/sqrt(mean(x^2)+eps) for the backward.
void rmsnorm_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, float eps);
// dy: (N, C) ; dx: (N, C) OVERWRITTEN (may alias dy) ; dgain: (C) f32 ACCUMULATED, only when gain is defined.
void rmsnorm_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain);

// The weightless backward from the OUTPUT y = x r instead of x (memory-efficient form: the f32 input
// need not be kept; y is kept anyway by the matmul that reads it): dx = r (dy - y mean(dy y)).
// dx may alias dy.
void rmsnorm_backward_from_output(const Tensor& y, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                                  bool accumulate = false);

#if PGOLF_CUDA
namespace cuda {
void rmsnorm_backward_from_output(const Tensor& y, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                                  bool accumulate);
void rmsnorm_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, float eps);
void rmsnorm_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
