#pragma once
// A weighted sum of up to three same-sized tensors with learned SCALAR weights read from device
// memory (the two-lane residual routing of TECHNIQUES.md §5.13: A <- rho A + pi_a a + pi_m m).
#include <vector>

#include "core/tensor.h"

namespace pgolf::ops {

// One term s * x. s: (1) f32. For the backward, dx (like x, OVERWRITTEN with s * dout) and ds ((1)
// f32, ACCUMULATED with sum(dout * x)) may each be undefined (not wanted).
struct MixTerm {
  Tensor s, x, dx, ds;
};
constexpr int kMaxMixTerms = 3;

// out = sum_i s_i x_i. x_i and out: same numel, f32|bf16 each; 1..3 terms. out may alias no x_i.
void scalar_mix_forward(const std::vector<MixTerm>& terms, const Tensor& out);
// dout: same numel as the x_i. No dx may alias dout or another input.
void scalar_mix_backward(const std::vector<MixTerm>& terms, const Tensor& dout);

#if PGOLF_CUDA
namespace cuda {
void scalar_mix_forward(const std::vector<MixTerm>& terms, const Tensor& out);
void scalar_mix_backward(const std::vector<MixTerm>& terms, const Tensor& dout);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
