#pragma once
// Fused logit soft-cap + cross-entropy: loss and dlogits in one pass over each row, so fp32 logits
// for the whole batch never exist.
#include "core/tensor.h"

namespace pgolf::ops {

// logits: (N, V) f32|bf16, the raw z = h E^T.
// targets: (N) i32; a negative target ignores the row (loss 0, gradient 0).
// cap > 0: capped logits c = cap * tanh(z / cap); cap == 0: c = z.
// losses: (N) f32, -log softmax(c)[target] in nats.
// dlogits: undefined (forward only) or (N, V) f32|bf16 (may alias logits):
//   dlogits = grad_scale * (softmax(c) - onehot(target)) * dc/dz.
void softcap_cross_entropy(const Tensor& logits, const Tensor& targets, float cap, const Tensor& losses,
                           const Tensor& dlogits, float grad_scale);

// Log-probabilities of the capped distribution (eval paths that need the full distribution).
// logprobs: (N, V) f32 (may alias logits when logits is f32).
void softcap_log_softmax(const Tensor& logits, float cap, const Tensor& logprobs);

#if PGOLF_CUDA
namespace cuda {
void softcap_cross_entropy(const Tensor& logits, const Tensor& targets, float cap, const Tensor& losses,
                           const Tensor& dlogits, float grad_scale);
void softcap_log_softmax(const Tensor& logits, float cap, const Tensor& logprobs);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
