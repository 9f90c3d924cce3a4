// CUDA reductions into small f32 tensors. Whole-tensor sums: per-block fp32 partials combined with
// one atomicAdd per block (so the last bits may vary run to run); rows: one warp per row.
#include "ops/cuda_colsum.cuh"
#include "ops/cuda_common.cuh"
#include "ops/reduce.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

template <bool kSquare> __device__ __forceinline__ float term(float v) { return kSquare ? v * v : v; }

template <bool kSquare> __global__ void sum_kernel(DevPtr x, int64_t n, bool vec, float* __restrict__ out) {
  __shared__ float shared[32];
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nvec = vec ? n / 8 : 0;
  float acc = 0.f;
  for (int64_t v = tid; v < nvec; v += stride) {
    float e[8];
    load8(x, v * 8, e);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc += term<kSquare>(e[j]);
  }
  for (int64_t i = nvec * 8 + tid; i < n; i += stride) acc += term<kSquare>(load1(x, i));
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}

template <bool kSquare> void launch_sum(const char* op, const Tensor& x, const Tensor& out, bool accumulate) {
  require_dtype(op, "out", out, DType::F32);
  PG_CHECK(out.numel() == 1, "{}: out is {}, expected one element", op, out.desc());
  const DevPtr xp = dev_ptr(op, "x", x);
  if (!accumulate) PG_CUDA_CHECK(cudaMemsetAsync(out.data(), 0, sizeof(float), stream()), op);
  const int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = aligned16(xp.p);
  const unsigned grid = grid_for(vec ? (n + 7) / 8 : n, kThreads, 1024);
  sum_kernel<kSquare><<<grid, kThreads, 0, stream()>>>(xp, n, vec, out.ptr<float>());
  PG_CUDA_LAUNCH_CHECK(op);
}

// One warp per row of (N, C): out[r] = sum_c x[r, c]^2.
__global__ void row_sum_squares_kernel(DevPtr x, int64_t N, int64_t C, bool vec, float* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const int64_t base = row * C;
  float acc = 0.f;
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 32 * 8) {
      float e[8];
      load8(x, base + c, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc += e[j] * e[j];
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) {
      const float v = load1(x, base + c);
      acc += v * v;
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) out[row] = acc;
}

struct IdentityTerm {
  DevPtr x;
  __device__ float operator()(int64_t, int64_t, int64_t i) const { return load1(x, i); }
};

}  // namespace

void sum(const Tensor& x, const Tensor& out, bool accumulate) { launch_sum<false>("sum", x, out, accumulate); }

void sum_squares(const Tensor& x, const Tensor& out, bool accumulate) {
  launch_sum<true>("sum_squares", x, out, accumulate);
}

void row_sum_squares(const Tensor& x, const Tensor& out) {
  const char* op = "row_sum_squares";
  PG_CHECK(x.ndim() == 2, "{}: x is {}, expected (N, C)", op, x.desc());
  require_dtype(op, "out", out, DType::F32);
  const int64_t N = x.dim(0), C = x.dim(1);
  PG_CHECK(out.numel() == N, "{}: out is {}, expected {} rows", op, out.desc(), N);
  if (N == 0) return;
  const DevPtr xp = dev_ptr(op, "x", x);
  const bool vec = aligned16(xp.p) && C % 8 == 0;
  constexpr int kRowsPerBlock = 8;
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  row_sum_squares_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(xp, N, C, vec, out.ptr<float>());
  PG_CUDA_LAUNCH_CHECK(op);
}

void col_sum_accum(const Tensor& x, const Tensor& out) {
  const char* op = "col_sum_accum";
  PG_CHECK(x.ndim() == 2, "{}: x is {}, expected (N, C)", op, x.desc());
  require_dtype(op, "out", out, DType::F32);
  PG_CHECK(out.numel() == x.dim(1), "{}: out is {}, expected {} columns", op, out.desc(), x.dim(1));
  launch_column_reduce(x.dim(0), x.dim(1), IdentityTerm{dev_ptr(op, "x", x)}, out.ptr<float>(), op);
}

}  // namespace pgolf::ops::cuda
