// CUDA squared activations (ReLU^2, LeakyReLU^2), forward and backward, 16-byte vectors when aligned.
#include "ops/activation.h"
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

// a(x) and a'(x); slope = 0 gives ReLU.
__device__ __forceinline__ float act(float x, float slope) { return x > 0.f ? x : slope * x; }
__device__ __forceinline__ float act_grad(float x, float slope) { return x > 0.f ? 1.f : slope; }

// kBackward = false: y = a(x)^2 (dy unused) ; true: out = dy * 2 a(x) a'(x).
template <bool kBackward>
__global__ void activation_kernel(DevPtr x, DevPtr dy, DevPtr out, int64_t n, float slope, bool vec) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nvec = vec ? n / 8 : 0;
  for (int64_t v = tid; v < nvec; v += stride) {
    float xe[8], r[8], de[8] = {};
    load8(x, v * 8, xe);
    if constexpr (kBackward) load8(dy, v * 8, de);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float a = act(xe[j], slope);
      r[j] = kBackward ? de[j] * 2.f * a * act_grad(xe[j], slope) : a * a;
    }
    store8(out, v * 8, r);
  }
  for (int64_t i = nvec * 8 + tid; i < n; i += stride) {
    const float xv = load1(x, i), a = act(xv, slope);
    store1(out, i, kBackward ? load1(dy, i) * 2.f * a * act_grad(xv, slope) : a * a);
  }
}

float slope_of(Act a, float slope) { return a == Act::Relu2 ? 0.f : slope; }

}  // namespace

void activation_forward(Act a, const Tensor& x, const Tensor& y, float slope) {
  const char* op = "activation_forward";
  PG_CHECK(x.numel() == y.numel(), "{}: x {} and y {} differ in size", op, x.desc(), y.desc());
  const DevPtr xp = dev_ptr(op, "x", x), yp = dev_ptr(op, "y", y);
  const int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = aligned16(xp.p) && aligned16(yp.p);
  activation_kernel<false><<<grid_for(vec ? (n + 7) / 8 : n, 256), 256, 0, stream()>>>(xp, DevPtr{}, yp, n,
                                                                                      slope_of(a, slope), vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void activation_backward(Act a, const Tensor& x, const Tensor& dy, const Tensor& dx, float slope) {
  const char* op = "activation_backward";
  PG_CHECK(x.numel() == dy.numel() && x.numel() == dx.numel(), "{}: x {}, dy {}, dx {} differ in size", op,
           x.desc(), dy.desc(), dx.desc());
  const DevPtr xp = dev_ptr(op, "x", x), dyp = dev_ptr(op, "dy", dy), dxp = dev_ptr(op, "dx", dx);
  const int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = aligned16(xp.p) && aligned16(dyp.p) && aligned16(dxp.p);
  activation_kernel<true><<<grid_for(vec ? (n + 7) / 8 : n, 256), 256, 0, stream()>>>(xp, dyp, dxp, n,
                                                                                     slope_of(a, slope), vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
