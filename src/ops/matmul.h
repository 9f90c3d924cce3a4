#pragma once
// Matrix products, row-major. GPU: cuBLASLt (bf16 or f32 inputs, fp32 accumulation, algorithm
// choice cached per shape). CPU: OpenBLAS sgemm (bf16 inputs are widened to f32 first).
#include "core/tensor.h"

namespace pgolf::ops {

enum class Trans : uint8_t { N, T };

// C = alpha * op(A) @ op(B) + beta * C, with op(A): (M, K), op(B): (K, N), C: (M, N).
// A as stored is (M, K) for Trans::N and (K, M) for Trans::T; likewise B.
// A and B share a dtype (f32 or bf16); C is f32 or bf16, except that f32 inputs need an f32 C
// (cuBLASLt has no f32-input/bf16-output kernels; the CPU enforces the same rule).
void matmul(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha = 1.f,
            float beta = 0.f);
// Batched: A (Bt, ., .), B (Bt, ., .) or (., .) shared by every batch, C (Bt, M, N).
void matmul_batched(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha = 1.f,
                    float beta = 0.f);

// Linear layer in the PyTorch convention. x: (N, in) ; w: (out, in) ; y: (N, out) = x w^T.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y);
// dx = dy w (OVERWRITTEN, or ADDED when accumulate_dx; skipped if dx undefined) ;
// dw += dy^T x (f32, ACCUMULATED; skipped if undefined).
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                     bool accumulate_dx = false);

#if PGOLF_CUDA
namespace cuda {
void matmul(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta);
void matmul_batched(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
