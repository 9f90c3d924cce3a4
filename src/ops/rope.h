#pragma once
// Rotary position embedding over a prefix of each head's dimensions (partial RoPE).
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// x, y: (B, T, H, D) f32|bf16 (y may alias x). The first `rot_dims` (even, <= D) dims of each head are
// rotated "rotate-half" style: pair (i, i + rot_dims/2) for i < rot_dims/2 with angle
// theta = pos * base^(-2i/rot_dims), pos = pos_offset + t. Dims >= rot_dims pass through.
//   y_i = x_i cos - x_{i+h} sin ;  y_{i+h} = x_{i+h} cos + x_i sin      (h = rot_dims/2)
// Angles are computed in fp32 from the same formula on CPU and GPU.
void rope_forward(const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset = 0);
// The transpose rotation: dx = R^T dy (dx may alias dy).
void rope_backward(const Tensor& dy, const Tensor& dx, int rot_dims, float base, int64_t pos_offset = 0);

#if PGOLF_CUDA
namespace cuda {
void rope_forward(const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset);
void rope_backward(const Tensor& dy, const Tensor& dx, int rot_dims, float base, int64_t pos_offset);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
