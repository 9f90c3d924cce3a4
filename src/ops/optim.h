#pragma once
// Optimizer kernels. Hyperparameters that change every step (lr, momentum) are read from a small
// device tensor `hp` so a captured CUDA graph picks up new values without re-capture.
#include "core/tensor.h"

namespace pgolf::ops {

// hp layout for adam_step: (8) f32 = [lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale]
// with bias_corr_i = 1 - beta_i^step. p, m, v: f32 ; g: f32. Decoupled weight decay (AdamW):
//   g' = g*grad_scale ; m = b1 m + (1-b1) g' ; v = b2 v + (1-b2) g'^2 ;
//   p = p*(1 - lr*wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps)
void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& hp);

// Muon momentum with Nesterov. hp: (2) f32 = [momentum, grad_scale].
//   g' = g*grad_scale ; buf = mu buf + g' ; u = nesterov ? g' + mu buf : buf.
// g, buf: f32 (R, C) ; u: f32|bf16 (R, C).
void muon_momentum(const Tensor& g, const Tensor& buf, const Tensor& u, const Tensor& hp, bool nesterov);

// Row normalisation (MuonEq-R): x_i /= max(||x_i||_2, eps), rows of (R, C), in place, f32|bf16.
void row_normalize(const Tensor& x, float eps);

// Muon apply. hp: (3) f32 = [lr, weight_decay, shape_scale]:  p = p*(1 - lr*wd) - lr*shape_scale*x.
// p: f32 (R, C) ; x: f32|bf16 (R, C) (the orthogonalised update).
void muon_apply(const Tensor& p, const Tensor& x, const Tensor& hp);

// EMA: avg = decay*avg + (1-decay)*p ; avg, p: f32. hp: (1) f32 = [decay].
void ema_update(const Tensor& avg, const Tensor& p, const Tensor& hp);

// Global grad-norm clipping as torch's clip_grad_norm_, decided on the device so a captured step needs no host
// read. parts: (P) f32 per-tensor sums of squares; order: (n) i32 indices into parts, added in that order in
// double; norm = sqrt(sum); scale = f32(min(1, max_norm / (norm + 1e-6))) is written to hp[slots[k]] for every k
// (the grad_scale entries of the optimizer kernels' hp); norm_out: (1) f32 = norm, for logging. Every step is an
// IEEE double operation, so the CPU and the GPU give the same bits for the same parts.
void clip_grad_scale(const Tensor& parts, const Tensor& order, double max_norm, const Tensor& hp, const Tensor& slots,
                     const Tensor& norm_out);

#if PGOLF_CUDA
namespace cuda {
void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& hp);
void muon_momentum(const Tensor& g, const Tensor& buf, const Tensor& u, const Tensor& hp, bool nesterov);
void row_normalize(const Tensor& x, float eps);
void muon_apply(const Tensor& p, const Tensor& x, const Tensor& hp);
void ema_update(const Tensor& avg, const Tensor& p, const Tensor& hp);
void clip_grad_scale(const Tensor& parts, const Tensor& order, double max_norm, const Tensor& hp, const Tensor& slots,
                     const Tensor& norm_out);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
