// CUDA sigmoid_lerp (value residual learning, TECHNIQUES.md §5.11): elementwise, with the scalar
// gradient reduced per block and added atomically (at most 1024 blocks).
#include "ops/cuda_common.cuh"
#include "ops/lerp_gate.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoidf(float z) { return 1.f / (1.f + __expf(-z)); }

__global__ void fwd_kernel(const float* a, DevPtr x, DevPtr y, DevPtr out, int64_t n) {
  const float s = sigmoidf(a[0]);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store1(out, i, (1.f - s) * load1(x, i) + s * load1(y, i));
}

__global__ void bwd_kernel(const float* a, DevPtr x, DevPtr y, DevPtr dout, DevPtr dx, DevPtr dy, float* da,
                           int64_t n) {
  __shared__ float red[32];
  const float s = sigmoidf(a[0]);
  float acc = 0.f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = load1(dout, i);
    acc += g * (load1(y, i) - load1(x, i));
    if (dx.p != nullptr) store1(dx, i, (1.f - s) * g);
    if (dy.p != nullptr) store1(dy, i, s * g);
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) atomicAdd(da, s * (1.f - s) * acc);
}

}  // namespace

void sigmoid_lerp_forward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& out) {
  const char* op = "sigmoid_lerp_forward";
  const int64_t n = x.numel();
  if (n == 0) return;
  fwd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(a.ptr<float>(), dev_ptr(op, "x", x),
                                                                dev_ptr(op, "y", y), dev_ptr(op, "out", out), n);
  PG_CUDA_LAUNCH_CHECK(op);
}

void sigmoid_lerp_backward(const Tensor& a, const Tensor& x, const Tensor& y, const Tensor& dout, const Tensor& dx,
                           const Tensor& dy, const Tensor& da) {
  const char* op = "sigmoid_lerp_backward";
  const int64_t n = x.numel();
  if (n == 0) return;
  const DevPtr none{nullptr, Kind::F32};
  bwd_kernel<<<grid_for(n, kThreads, 1024), kThreads, 0, stream()>>>(
      a.ptr<float>(), dev_ptr(op, "x", x), dev_ptr(op, "y", y), dev_ptr(op, "dout", dout),
      dx.defined() ? dev_ptr(op, "dx", dx) : none, dy.defined() ? dev_ptr(op, "dy", dy) : none, da.ptr<float>(), n);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
