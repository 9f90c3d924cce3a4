#pragma once
// Column reduction out[c] += sum_n term(n, c) over an (N, C) layout, shared by col_sum_accum,
// channel_dot_accum, sigmoid_gate_backward and the per-channel gradients of the row ops.
// Warps read 32 consecutive columns of a row (coalesced); rows are split over gridDim.y chunks
// whose fp32 partials meet in one atomicAdd per (chunk, column), so the result is deterministic
// only when a single chunk suffices (small N).
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda::detail {

constexpr int kColTileX = 32;
constexpr int kColTileY = 8;

template <class Term>
__global__ void column_reduce_kernel(int64_t N, int64_t C, Term term, float* __restrict__ out) {
  __shared__ float part[kColTileY][kColTileX + 1];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTileX + threadIdx.x;
  float acc = 0.f;
  if (c < C) {
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * kColTileY + threadIdx.y; r < N;
         r += static_cast<int64_t>(gridDim.y) * kColTileY)
      acc += term(r, c, r * C + c);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kColTileY; ++k) s += part[k][threadIdx.x];
    if (gridDim.y == 1)
      out[c] += s;
    else
      atomicAdd(&out[c], s);
  }
}

// `term` is a device functor float(int64_t row, int64_t col, int64_t flat_index); it may also write
// per-element outputs (each element is visited exactly once).
template <class Term>
void launch_column_reduce(int64_t N, int64_t C, const Term& term, float* out, const char* what) {
  if (N <= 0 || C <= 0) return;
  const int64_t gx = (C + kColTileX - 1) / kColTileX;
  int64_t gy = (N + kColTileY * 16 - 1) / (kColTileY * 16);  // at least 16 rows per thread
  int64_t cap = 1024 / gx;
  if (cap < 1) cap = 1;
  if (gy > cap) gy = cap;
  if (gy > 65535) gy = 65535;
  PG_CHECK(gx <= 0x7fffffff, "{}: {} columns is too many for the column reduction", what, C);
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  dim3 block(kColTileX, kColTileY);
  column_reduce_kernel<<<grid, block, 0, stream()>>>(N, C, term, out);
  PG_CUDA_LAUNCH_CHECK(what);
}

}  // namespace pgolf::ops::cuda::detail
