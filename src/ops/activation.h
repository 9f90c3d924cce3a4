#pragma once
// Squared activations of the MLP: ReLU^2 and LeakyReLU(slope)^2.
#include "core/tensor.h"

namespace pgolf::ops {

enum class Act : uint8_t { Relu2, LeakyRelu2 };

// x, y: same shape, f32|bf16 (may differ). y = a(x)^2 with a = relu or leaky_relu(slope).
void activation_forward(Act act, const Tensor& x, const Tensor& y, float slope = 0.5f);
// dx = dy * 2 a(x) a'(x) (OVERWRITTEN; may alias dy).
void activation_backward(Act act, const Tensor& x, const Tensor& dy, const Tensor& dx, float slope = 0.5f);

#if PGOLF_CUDA
namespace cuda {
void activation_forward(Act act, const Tensor& x, const Tensor& y, float slope);
void activation_backward(Act act, const Tensor& x, const Tensor& dy, const Tensor& dx, float slope);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
