#pragma once
// Embedding lookup (gather) and its backward (scatter-add).
#include "core/tensor.h"

namespace pgolf::ops {

// ids: (N) i32 in [0, V) ; table: (V, C) f32|bf16 ; out: (N, C) f32|bf16 (any of the two).
void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out);
// dout: (N, C) f32|bf16 ; dtable: (V, C) f32, ACCUMULATED (dtable[ids[n]] += dout[n]).
void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable);

#if PGOLF_CUDA
namespace cuda {
void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
