#pragma once
// Scaled dot-product attention with GQA, causal masking, optional sliding window and optional
// document isolation. GPU: fused flash-attention kernels (head_dim 64, T up to 4096). CPU: direct.
#include "core/tensor.h"

namespace pgolf::ops {

struct AttnParams {
  bool causal = true;
  int window = 0;      // > 0: query i sees keys j with i - window < j <= i
  float scale = 0.f;   // 0 means 1/sqrt(head_dim)
};

// q: (B, T, Hq, D), k, v: (B, T, Hkv, D), same dtype (f32|bf16); Hq % Hkv == 0 and query head h
// reads kv head h / (Hq / Hkv).
// doc_start: undefined, or (B, T) i32: key j is visible to query i only if j >= doc_start[b, i]; non-decreasing
// along each row (as ops::doc_starts makes it: the CUDA backward bounds a key block's queries with it).
// out: (B, T, Hq, D) same dtype as q ; lse: (B, Hq, T) f32 = natural-log sum-exp of the scaled,
// masked scores of each query row (saved for the backward).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                       const Tensor& out, const Tensor& lse, const AttnParams& p);
// dq, dk, dv OVERWRITTEN, same shapes/dtypes as q, k, v.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                        const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const AttnParams& p);

// Which CUDA flash forward kernel runs for bf16, head_dim 64 (independent of the backward's choice below).
// Auto: the wgmma kernel (attention_fwd_wgmma.cuh) on compute capability 9.0, else the mma.sync one.
// The environment variable PGOLF_ATTN_FWD=mma|wgmma|wgmma64|wgmma128 (wgmma = the default key block)
// replaces Auto; set_attention_fwd_kernel (selftests, benchmarks) overrides both until reset to Auto.
// A wgmma kernel asked for on a device that cannot run it falls back to mma.sync.
enum class AttnFwdKernel { Auto, Mma, Wgmma64, Wgmma128 };
void set_attention_fwd_kernel(AttnFwdKernel k);
AttnFwdKernel attention_fwd_kernel_override();  // the value set above (Auto if none)
const char* attn_fwd_kernel_name(AttnFwdKernel k);

// Which CUDA flash backward kernel runs for bf16, head_dim 64 (the Dsum prep and dQ conversion kernels are
// shared). V1: attention_bwd.cuh (mma.sync, 64 keys per block of 4 warps). Wgmma128 / Wgmma64:
// attention_bwd_wgmma.cuh (warpgroup MMAs, compute capability 9.0 only) with 128 keys per block of 2
// warpgroups (one block per SM) / 64 keys per block of 1 warpgroup (two blocks per SM). WgmmaDqMma: the
// 128-key kernel with its dQ product on mma.sync instead of a transposed-A wgmma (a diagnostic variant).
// Auto: wgmma64 on compute capability 9.0, else V1. The environment variable
// PGOLF_ATTN_BWD=v1|wgmma|wgmma128|wgmma64|wgmma-dqmma (wgmma = the default wgmma kernel, wgmma64) replaces
// Auto; set_attention_bwd_kernel (selftests, benchmarks) overrides both until reset to Auto. A wgmma kernel asked for on a device that cannot run it falls back to V1.
enum class AttnBwdKernel { Auto, V1, Wgmma128, Wgmma64, WgmmaDqMma };
void set_attention_bwd_kernel(AttnBwdKernel k);
AttnBwdKernel attention_bwd_kernel_override();  // the value set above (Auto if none)
const char* attn_bwd_kernel_name(AttnBwdKernel k);

#if PGOLF_CUDA
namespace cuda {
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                       const Tensor& out, const Tensor& lse, const AttnParams& p);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                        const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const AttnParams& p);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
