// CUDA channel_scale_backward (ops/channel_grad.h). A thread owns 8 consecutive channels (16-byte
// vector loads) and walks rows with a grid stride, keeping its 8 partial sums of dy*f in registers;
// the block then folds its rows in shared memory and adds one atomic per channel. fp32 throughout.
#include "ops/channel_grad.h"
#include "ops/cuda_colsum.cuh"
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) channel_scale_back_vec_kernel(DevPtr dy, const float* __restrict__ s,
                                                                         DevPtr f, float* __restrict__ ds, DevPtr df,
                                                                         bool has_df, bool accumulate, int64_t N,
                                                                         int C) {
  __shared__ float part[kThreads * 8];
  const int groups = C / 8;                  // threads per row
  const int rows_per_block = kThreads / groups;
  const int g = threadIdx.x % groups, lr = threadIdx.x / groups;
  float acc[8] = {};
  float sv[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) sv[j] = s[g * 8 + j];
  if (lr < rows_per_block) {
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * rows_per_block + lr; r < N;
         r += static_cast<int64_t>(gridDim.x) * rows_per_block) {
      const int64_t i = r * C + g * 8;
      float d[8], x[8];
      load8(dy, i, d);
      load8(f, i, x);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += d[j] * x[j];
      if (has_df) {
        float o[8];
        if (accumulate) load8(df, i, o);
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = accumulate ? o[j] + sv[j] * d[j] : sv[j] * d[j];
        store8(df, i, o);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) part[threadIdx.x * 8 + j] = acc[j];
  __syncthreads();
  // Threads 0 .. C-1 fold the block's rows of channel c.
  for (int c = threadIdx.x; c < C; c += kThreads) {
    const int gg = c / 8, j = c % 8;
    float sum = 0.f;
    for (int k = 0; k < rows_per_block; ++k) sum += part[(k * groups + gg) * 8 + j];
    atomicAdd(ds + c, sum);
  }
}

// The general path (C not a multiple of 8, misaligned views, very wide rows): the shared column
// reduction with a term that also writes df.
struct ScaleBackTerm {
  DevPtr dy, f, df;
  const float* s;
  bool has_df, accumulate;
  __device__ float operator()(int64_t, int64_t c, int64_t i) const {
    const float d = load1(dy, i);
    if (has_df) store1(df, i, (accumulate ? load1(df, i) : 0.f) + s[c] * d);
    return d * load1(f, i);
  }
};

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()) % 16 == 0; }

}  // namespace

void channel_scale_backward(const Tensor& dy, const Tensor& s, const Tensor& f, const Tensor& ds, const Tensor& df,
                            bool accumulate) {
  const char* op = "channel_scale_backward";
  const int64_t N = dy.dim(0), C = dy.dim(1);
  if (N == 0 || C == 0) return;
  const bool has_df = df.defined();
  const DevPtr dyp = dev_ptr(op, "dy", dy), fp = dev_ptr(op, "f", f);
  const DevPtr dfp = has_df ? dev_ptr(op, "df", df) : DevPtr{};
  const bool vec = C % 8 == 0 && C / 8 <= kThreads && aligned16(dy) && aligned16(f) && (!has_df || aligned16(df));
  if (!vec) {
    ScaleBackTerm t{dyp, fp, dfp, s.ptr<float>(), has_df, accumulate};
    launch_column_reduce(N, C, t, ds.ptr<float>(), op);
    return;
  }
  const int64_t rows_per_block = kThreads / (C / 8);
  // About two resident waves: enough rows per thread to amortise the fold and the atomics.
  const int64_t blocks = std::min<int64_t>((N + rows_per_block - 1) / rows_per_block, 132 * 8 * 2);
  channel_scale_back_vec_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(
      dyp, s.ptr<float>(), fp, ds.ptr<float>(), dfp, has_df, accumulate, N, static_cast<int>(C));
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
