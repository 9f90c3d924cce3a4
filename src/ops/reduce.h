#pragma once
// Reductions into small device tensors (no host sync; read them back only when logging).
#include "core/tensor.h"

namespace pgolf::ops {

// out: (1) f32 ; out = sum(x) (accumulate=false) or out += sum(x) (accumulate=true). x f32|bf16.
void sum(const Tensor& x, const Tensor& out, bool accumulate = false);
// out: (1) f32 ; sum of squares, same accumulate rule (global grad norms are built from these).
void sum_squares(const Tensor& x, const Tensor& out, bool accumulate = false);
// Per-row sum of squares: x (N, C) -> out (N) f32.
void row_sum_squares(const Tensor& x, const Tensor& out);
// Column sums: x (N, C) -> out (C) f32, ACCUMULATED.
void col_sum_accum(const Tensor& x, const Tensor& out);

#if PGOLF_CUDA
namespace cuda {
void sum(const Tensor& x, const Tensor& out, bool accumulate);
void sum_squares(const Tensor& x, const Tensor& out, bool accumulate);
void row_sum_squares(const Tensor& x, const Tensor& out);
void col_sum_accum(const Tensor& x, const Tensor& out);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
