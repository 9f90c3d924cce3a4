#pragma once
// Attention output gates (TECHNIQUES.md §5.14): each head's attention output (after XSA, before W_o)
// is scaled by a gate computed from the first W channels of the block's normed attention input.
//   z[n, h] = sum_{j < W} w[h, j] x[n, j] ;  g[n, h] = amp * sigmoid(c * z[n, h])
//   out[n, h, :] = g[n, h] * y[n, h, :]
// AttnOutGate: amp 2, c 1, W 12 ; dense gated attention: amp 1, c 1, W = C ; SparseAttnGate: amp 1,
// c 0.5, W 12.
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// x: (N, C) f32|bf16 (only x[:, 0:W] is read) ; w: (H, W) f32 with W <= C ; y, out: (N, H, D) f32|bf16,
// same dtype ; out may not alias y.
void attn_gate_forward(const Tensor& x, const Tensor& w, const Tensor& y, float amp, float c, const Tensor& out);
// dy (like y, OVERWRITTEN) = g dout ; dx (like x, OVERWRITTEN; columns >= W are 0; may be undefined) ;
// dw (H, W) f32 ACCUMULATED. No output aliases an input.
void attn_gate_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dout, float amp, float c,
                        const Tensor& dx, const Tensor& dy, const Tensor& dw);

namespace ref {  // double precision, contiguous arrays, for finite-difference tests
void attn_gate_forward(const double* x, const double* w, const double* y, double amp, double c, double* out,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t D);
void attn_gate_backward(const double* x, const double* w, const double* y, const double* dout, double amp, double c,
                        double* dx, double* dy, double* dw, int64_t N, int64_t C, int64_t H, int64_t W, int64_t D);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void attn_gate_forward(const Tensor& x, const Tensor& w, const Tensor& y, float amp, float c, const Tensor& out);
void attn_gate_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dout, float amp, float c,
                        const Tensor& dx, const Tensor& dy, const Tensor& dw);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
