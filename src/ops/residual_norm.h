#pragma once
// The residual-stream update fused with the RMSNorm that reads it (TECHNIQUES.md §4.2 block; §5.6 LN
// scale as the scalar gain g). The sequential block does, per sublayer,
//   y = x + s ⊙ f            (add form: the previous sublayer's output f joins the stream)
//   y = a ⊙ x + b ⊙ x0       (mix form: block entry, resid_mix)
//   n = g · y / sqrt(mean(y²) + eps)
// and these ops do each pair in one pass over the (N, C) f32 stream instead of three or four
// (add_mul_channel or mix_channel, rmsnorm, and mul_head when the LN scale is on).
//
// The backward uses the memory-efficient form of ops/rmsnorm.h: it reads n and rstd, never y, so the
// f32 stream value need not be kept. With m = n / g the unit-gain norm output,
//   dy_total = dy + r (g dn - m mean(g dn m)) = dy + r (g dn - n mean(dn n) / g)
// then the channel gradients of the update, as ops/channel_grad.h does:
//   add:  ds += Σ_rows dy_total f ; df (=|+=) s dy_total ; x receives dy_total (written over dy)
//   mix:  da += Σ_rows dy_total x ; db += Σ_rows dy_total x0 ; dx (=|+=) a dy_total ; dx0 (=|+=) b dy_total
// g must be non-zero (it is 1/sqrt(l+1), or 1 without the LN scale).
//
// Shapes and dtypes: x, x0, f, dx, dx0, df: (N, C) f32|bf16 ; s, a, b, ds, da, db: (C) f32 ;
// y, dy: (N, C) f32 (the residual stream) ; n, dn: (N, C) f32|bf16 (the activation dtype) ; rstd (N) f32.
#include "core/tensor.h"

namespace pgolf::ops {

// y may alias x (not f); n aliases nothing. rstd receives 1/sqrt(mean(y²) + eps) of the stored y.
void add_rmsnorm_forward(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& y, const Tensor& n,
                         const Tensor& rstd, float g, float eps);
void mix_rmsnorm_forward(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& y,
                         const Tensor& n, const Tensor& rstd, float g, float eps);

// dy: IN the gradient reaching y from the rest of the stream, OUT y's total gradient (which is x's:
// the caller hands it on). dn undefined: n received no gradient. ds ACCUMULATED. df undefined: f needs
// no gradient; else OVERWRITTEN (accumulate = false) or added to. df may not alias dy, n, dn or f.
void add_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& s,
                          const Tensor& f, const Tensor& dy, const Tensor& ds, const Tensor& df, bool accumulate);
// dy: IN the gradient reaching y from the rest of the stream; the op may leave y's total gradient in it
// (scratch: the caller reads dy no more). da, db ACCUMULATED. dx / dx0 undefined: no gradient; else
// OVERWRITTEN or added to (acc_x / acc_x0). dx and dx0 may be the same tensor (x and x0 are one value):
// dx's contribution is applied first, so pass acc_x0 = true then. Neither may alias dy, n or dn.
void mix_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& a,
                          const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& dy, const Tensor& da,
                          const Tensor& db, const Tensor& dx, bool acc_x, const Tensor& dx0, bool acc_x0);

namespace ref {
// Double-precision instantiations of the CPU kernels (contiguous (N, C) arrays, same argument roles;
// null dn / df / dx / dx0 as undefined above) for finite-difference tests.
void add_rmsnorm_forward(const double* x, const double* s, const double* f, double* y, double* n, double* rstd,
                         int64_t N, int64_t C, double g, double eps);
void mix_rmsnorm_forward(const double* a, const double* x, const double* b, const double* x0, double* y, double* n,
                         double* rstd, int64_t N, int64_t C, double g, double eps);
void add_rmsnorm_backward(const double* n, const double* rstd, const double* dn, double g, const double* s,
                          const double* f, double* dy, double* ds, double* df, int64_t N, int64_t C);
void mix_rmsnorm_backward(const double* n, const double* rstd, const double* dn, double g, const double* a,
                          const double* x, const double* b, const double* x0, double* dy, double* da, double* db,
                          double* dx, double* dx0, int64_t N, int64_t C);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void add_rmsnorm_forward(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& y, const Tensor& n,
                         const Tensor& rstd, float g, float eps);
void mix_rmsnorm_forward(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& y,
                         const Tensor& n, const Tensor& rstd, float g, float eps);
void add_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& s,
                          const Tensor& f, const Tensor& dy, const Tensor& ds, const Tensor& df, bool accumulate);
void mix_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& a,
                          const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& dy, const Tensor& da,
                          const Tensor& db, const Tensor& dx, bool acc_x, const Tensor& dx0, bool acc_x0);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
