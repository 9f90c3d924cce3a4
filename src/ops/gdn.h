#pragma once
// GatedDeltaNet core ops (TECHNIQUES.md §5.18; docs/GDN.md): the gated delta rule per head, its gates and
// the short causal depthwise convolution in front of it. Per (batch b, head h), with state S_t in R^{Dk x Dv}:
//   alpha_t = exp(g_t)  (g = log decay <= 0, given directly: the layer computes -exp(A_log) softplus(.))
//   S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T ,   o_t = S_t^T q_t
// q and k arrive already L2-normalized (and q scaled by 1/sqrt(Dk)): the op does not normalize.
// Two forms with the same result: the chunked (WY/UT) form for training, forward and backward, and the
// recurrent form, step by step, for evaluation/decoding. Document boundaries are not handled (the state
// runs across the whole row, as in seed #1672).
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

constexpr int kGdnChunk = 64;  // C of §5.18

// Number of chunks of a row of T tokens.
inline int64_t gdn_num_chunks(int64_t T, int chunk) { return (T + chunk - 1) / chunk; }

// Chunked forward.
//   q, k: (B, T, H, Dk) f32|bf16 ; v: (B, T, H, Dv) f32|bf16 ; g, beta: (B, T, H) f32
//   init: (B, H, Dk, Dv) f32 or undefined (= zero state)
//   o: (B, T, H, Dv) f32|bf16 (may not alias an input)
//   states: (B, H, NC, Dk, Dv) f32, NC = gdn_num_chunks(T, chunk): the state at the start of each chunk,
//           written here and read by the backward
//   final_state: (B, H, Dk, Dv) f32 or undefined: the state after the last token (may alias init)
void gdn_chunk_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                       const Tensor& init, const Tensor& o, const Tensor& states, const Tensor& final_state,
                       int chunk = kGdnChunk);
// Chunked backward; every gradient is OVERWRITTEN.
//   states: as written by gdn_chunk_forward with the same chunk ; dout: (B, T, H, Dv)
//   dfinal: (B, H, Dk, Dv) f32 or undefined (= 0), the gradient of final_state
//   dq, dk: (B, T, H, Dk) ; dv: (B, T, H, Dv) (f32|bf16) ; dg, dbeta: (B, T, H) f32
//   dinit: (B, H, Dk, Dv) f32 or undefined (not wanted)
void gdn_chunk_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                        const Tensor& states, const Tensor& dout, const Tensor& dfinal, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const Tensor& dg, const Tensor& dbeta, const Tensor& dinit,
                        int chunk = kGdnChunk);
// Which CUDA kernels the chunked ops run (docs/GDN.md "GPU kernels"): the fp32 loop kernels (any shape), or the
// tensor-core kernels (tf32 mma.sync; Dk = Dv = chunk = 64 only, else the loop kernels run). Auto: the tensor-core
// kernels for bf16 q, k, v (their tf32 error is below bf16 rounding), the loop kernels for f32 (kept at fp32
// accuracy for the parity tests and f32 reference runs). The environment variable PGOLF_GDN_KERNEL=loop|tc
// replaces Auto; set_gdn_kernel (selftests, benchmarks) overrides both until reset to Auto. The CPU ops ignore it.
enum class GdnKernel { Auto, Loop, Tc };
void set_gdn_kernel(GdnKernel k);
GdnKernel gdn_kernel_override();  // the value set above (Auto if none)
const char* gdn_kernel_name(GdnKernel k);
// The CUDA short convolution streams a register window along t for kernel sizes 1..8 (else, or with
// PGOLF_SHORT_CONV=generic, it runs the per-element kernels). set_short_conv_generic(true) forces the per-element
// kernels (selftests compare both paths against the CPU); the CPU op ignores it.
void set_short_conv_generic(bool generic);
bool short_conv_generic_forced();

// Recurrent form (evaluation): token by token from `state` (B, H, Dk, Dv) f32, which is read and
// then overwritten with the state after the last token (zero it for a fresh row). o: (B, T, H, Dv).
void gdn_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                           const Tensor& state, const Tensor& o);

// The layer's gates (§5.18), per token and head, from the projections a = W_a x and bb = W_b x:
//   g = -exp(A_log[h]) * softplus(a + dt_bias[h])  (the log decay the recurrence takes) ;  beta = beta_scale *
//   sigmoid(bb)
// beta_scale = 2 with allow_neg_eigval (the seed), 1 without.
// a, bb: (B, T, H) f32|bf16 ; A_log, dt_bias: (H) f32 ; g, beta: (B, T, H) f32.
void gdn_gates_forward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& g,
                       const Tensor& beta, float beta_scale = 2.f);
// da, dbb (OVERWRITTEN, like a and bb) ; dA_log, ddt_bias (H) f32, ACCUMULATED (+=).
void gdn_gates_backward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& dg,
                        const Tensor& dbeta, const Tensor& da, const Tensor& dbb, const Tensor& dA_log,
                        const Tensor& ddt_bias, float beta_scale = 2.f);

// Short causal depthwise convolution with optional fused SiLU (§5.18 "conv4"), no bias:
//   z[b,t,c] = sum_{j<K} w[c,j] x[b, t-K+1+j, c]  (x = 0 before the row start) ;  y = silu ? SiLU(z) : z
// x, y: (B, T, C) f32|bf16 (y may not alias x) ; w: (C, K) f32.
void short_conv_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool silu);
// dx (OVERWRITTEN, like x; may not alias x or dy) ; dw (C, K) f32, ACCUMULATED (+=).
void short_conv_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                         bool silu);

namespace ref {  // double precision, contiguous arrays in the layouts above, for finite-difference tests
// init, final_state may be null (zero / not wanted); states has B*H*NC*Dk*Dv entries.
void gdn_chunk_forward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                       const double* init, double* o, double* states, double* final_state, int64_t B, int64_t T,
                       int64_t H, int64_t Dk, int64_t Dv, int chunk);
// dfinal, dinit may be null.
void gdn_chunk_backward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                        const double* states, const double* dout, const double* dfinal, double* dq, double* dk,
                        double* dv, double* dg, double* dbeta, double* dinit, int64_t B, int64_t T, int64_t H,
                        int64_t Dk, int64_t Dv, int chunk);
// state: B*H*Dk*Dv, read and overwritten.
void gdn_recurrent_forward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                           double* state, double* o, int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv);
// rows = B*T*H ; A_log, dt_bias, dA_log, ddt_bias: H entries (the d* accumulate).
void gdn_gates_forward(const double* a, const double* bb, const double* A_log, const double* dt_bias, double* g,
                       double* beta, int64_t rows, int64_t H, double beta_scale);
void gdn_gates_backward(const double* a, const double* bb, const double* A_log, const double* dt_bias, const double* dg,
                        const double* dbeta, double* da, double* dbb, double* dA_log, double* ddt_bias, int64_t rows,
                        int64_t H, double beta_scale);
void short_conv_forward(const double* x, const double* w, double* y, int64_t B, int64_t T, int64_t C, int64_t K,
                        bool silu);
void short_conv_backward(const double* x, const double* w, const double* dy, double* dx, double* dw, int64_t B,
                         int64_t T, int64_t C, int64_t K, bool silu);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void gdn_chunk_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                       const Tensor& init, const Tensor& o, const Tensor& states, const Tensor& final_state, int chunk);
void gdn_chunk_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                        const Tensor& states, const Tensor& dout, const Tensor& dfinal, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const Tensor& dg, const Tensor& dbeta, const Tensor& dinit,
                        int chunk);
void gdn_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                           const Tensor& state, const Tensor& o);
void gdn_gates_forward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& g,
                       const Tensor& beta, float beta_scale);
void gdn_gates_backward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& dg,
                        const Tensor& dbeta, const Tensor& da, const Tensor& dbb, const Tensor& dA_log,
                        const Tensor& ddt_bias, float beta_scale);
void short_conv_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool silu);
void short_conv_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                         bool silu);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
