#pragma once
// The attention input preparation of one of q or k, fused (TECHNIQUES.md §4.2, §5.2, §5.3): per-head
// RMSNorm over D, partial RoPE (rotate-half over the first rot_dims dims, ops/rope.h's convention and
// angles) and an optional per-head gain (q_gain), in one pass instead of three:
//   y[b,t,h,:] = gain[h] * R_t( x[b,t,h,:] * r ),   r = 1/sqrt(mean_D(x^2) + eps)
// Saves r per (b,t,h) for the backward, which needs x, r and dy only:
//   u = R_t(x r); du = gain dy; dgain[h] += sum dy*u; dn = R_t^T du; dx = r (dn - x r mean_D(dn x r)).
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// x, y: (B, T, H, D) f32|bf16 (y may not alias x); gain: (H) f32 or undefined (= 1); rstd: (B*T*H) f32.
void qk_prep_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, int rot_dims,
                     float base, float eps, int64_t pos_offset = 0);
// dy, dx: (B, T, H, D) (dx may not alias dy or x); dgain: (H) f32, ACCUMULATED (+=), undefined when gain is.
void qk_prep_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain, int rot_dims, float base, int64_t pos_offset = 0);

namespace ref {  // double-precision instantiations for finite-difference tests (gain/dgain may be null)
void qk_prep_forward(const double* x, const double* gain, double* y, double* rstd, int64_t B, int64_t T, int64_t H,
                     int64_t D, int rot_dims, double base, double eps, int64_t pos_offset);
void qk_prep_backward(const double* x, const double* gain, const double* rstd, const double* dy, double* dx,
                      double* dgain, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims, double base,
                      int64_t pos_offset);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void qk_prep_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, int rot_dims,
                     float base, float eps, int64_t pos_offset);
void qk_prep_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain, int rot_dims, float base, int64_t pos_offset);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
