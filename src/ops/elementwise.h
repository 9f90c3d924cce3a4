#pragma once
// Elementwise families. Unless stated, tensors have equal numel, any of f32|bf16 each, and outputs
// may alias inputs. "Per-channel" vectors s are (C) f32 and broadcast over rows of (N, C) tensors.
#include "core/tensor.h"

namespace pgolf::ops {

void fill(const Tensor& x, float value);
void copy(const Tensor& src, const Tensor& dst);  // with dtype conversion (f32 <-> bf16 <-> f16)
void add(const Tensor& a, const Tensor& b, const Tensor& out);            // out = a + b
void axpby(float alpha, const Tensor& x, float beta, const Tensor& y);    // y = alpha x + beta y
void mul(const Tensor& a, const Tensor& b, const Tensor& out);            // out = a * b
void scale(const Tensor& x, float alpha, const Tensor& out);              // out = alpha x

// Per-channel families, x: (N, C), s: (C) f32.
void mul_channel(const Tensor& x, const Tensor& s, const Tensor& out);                    // out = s*x
void add_mul_channel(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& out);  // out = x + s*f
// ds[c] += sum_n a[n, c] * b[n, c] (ds f32, ACCUMULATED): the gradient of every per-channel weight.
void channel_dot_accum(const Tensor& a, const Tensor& b, const Tensor& ds);
// out = s0*x0 + s1*x1 (two-input per-channel mix, e.g. resid_mix).
void mix_channel(const Tensor& s0, const Tensor& x0, const Tensor& s1, const Tensor& x1, const Tensor& out);

// Sigmoid gate: out = sigmoid(g) * x (g broadcast per channel when g is (C), else elementwise).
void sigmoid_gate_forward(const Tensor& g, const Tensor& x, const Tensor& out);
// dx = sigmoid(g) dout (OVERWRITTEN) ; dg += sum dout * x * s(1-s) (ACCUMULATED, f32; summed over
// rows when g is per-channel).
void sigmoid_gate_backward(const Tensor& g, const Tensor& x, const Tensor& dout, const Tensor& dx,
                           const Tensor& dg);

#if PGOLF_CUDA
namespace cuda {
void fill(const Tensor& x, float value);
void copy(const Tensor& src, const Tensor& dst);
void add(const Tensor& a, const Tensor& b, const Tensor& out);
void axpby(float alpha, const Tensor& x, float beta, const Tensor& y);
void mul(const Tensor& a, const Tensor& b, const Tensor& out);
void scale(const Tensor& x, float alpha, const Tensor& out);
void mul_channel(const Tensor& x, const Tensor& s, const Tensor& out);
void add_mul_channel(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& out);
void channel_dot_accum(const Tensor& a, const Tensor& b, const Tensor& ds);
void mix_channel(const Tensor& s0, const Tensor& x0, const Tensor& s1, const Tensor& x1, const Tensor& out);
void sigmoid_gate_forward(const Tensor& g, const Tensor& x, const Tensor& out);
void sigmoid_gate_backward(const Tensor& g, const Tensor& x, const Tensor& dout, const Tensor& dx,
                           const Tensor& dg);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
