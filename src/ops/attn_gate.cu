// CUDA attention output gates (TECHNIQUES.md §5.14). One warp per token: the H gate dots over the
// first W input channels are warp sums, the per-head gates sit in shared memory. The backward
// accumulates dw per block in shared memory and adds it to the global gradient once per block.
#include "ops/attn_gate.h"
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxHeads = 64;

__device__ __forceinline__ float sigmoidf(float z) { return 1.f / (1.f + __expf(-z)); }

// sigmoid(c * w[h] . x[tok, 0:W]) for h < H into s[h] (whole warp; lane 0 writes).
__device__ __forceinline__ void warp_gates(DevPtr x, const float* w, float c, int64_t tok, int64_t C, int H, int W,
                                           int lane, float* s) {
  for (int h = 0; h < H; ++h) {
    float z = 0.f;
    for (int j = lane; j < W; j += 32) z += w[h * W + j] * load1(x, tok * C + j);
    z = warp_sum(z);
    if (lane == 0) s[h] = sigmoidf(c * z);
  }
  __syncwarp();
}

__global__ void fwd_kernel(DevPtr x, const float* w, DevPtr y, float amp, float c, DevPtr out, int64_t N, int64_t C,
                           int H, int W, int D) {
  __shared__ float gate[kWarps][kMaxHeads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tok < N;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    warp_gates(x, w, c, tok, C, H, W, lane, gate[warp]);
    const int HD = H * D;
    for (int k = lane; k < HD; k += 32) {
      const int64_t i = tok * HD + k;
      store1(out, i, amp * gate[warp][k / D] * load1(y, i));
    }
    __syncwarp();
  }
}

// Dynamic shared memory: dw partial (H * W floats). Static: gates and dz per warp.
__global__ void bwd_kernel(DevPtr x, const float* w, DevPtr y, DevPtr dout, float amp, float c, DevPtr dx, DevPtr dy,
                           float* dw, int64_t N, int64_t C, int H, int W, int D) {
  extern __shared__ float dw_part[];
  __shared__ float gate[kWarps][kMaxHeads];
  __shared__ float dz[kWarps][kMaxHeads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int k = threadIdx.x; k < H * W; k += blockDim.x) dw_part[k] = 0.f;
  __syncthreads();
  const int HD = H * D;
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tok < N;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    warp_gates(x, w, c, tok, C, H, W, lane, gate[warp]);
    for (int h = 0; h < H; ++h) {
      const float g = gate[warp][h];
      float a = 0.f;
      for (int k = lane; k < D; k += 32) {
        const int64_t i = tok * HD + static_cast<int64_t>(h) * D + k;
        const float go = load1(dout, i);
        a += load1(y, i) * go;
        store1(dy, i, amp * g * go);
      }
      a = warp_sum(a);
      if (lane == 0) dz[warp][h] = amp * c * g * (1.f - g) * a;
    }
    __syncwarp();
    for (int j = lane; j < W; j += 32) {
      const float xj = load1(x, tok * C + j);
      for (int h = 0; h < H; ++h) atomicAdd(&dw_part[h * W + j], dz[warp][h] * xj);
    }
    if (dx.p != nullptr)
      for (int64_t j = lane; j < C; j += 32) {
        float v = 0.f;
        if (j < W)
          for (int h = 0; h < H; ++h) v += dz[warp][h] * w[h * W + j];
        store1(dx, tok * C + j, v);
      }
    __syncwarp();
  }
  __syncthreads();
  for (int k = threadIdx.x; k < H * W; k += blockDim.x) atomicAdd(dw + k, dw_part[k]);
}

}  // namespace

void attn_gate_forward(const Tensor& x, const Tensor& w, const Tensor& y, float amp, float c, const Tensor& out) {
  const char* op = "attn_gate_forward";
  const int64_t N = x.dim(0);
  if (N == 0) return;
  fwd_kernel<<<grid_for(N, kWarps), kThreads, 0, stream()>>>(
      dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "y", y), amp, c, dev_ptr(op, "out", out), N, x.dim(1),
      static_cast<int>(w.dim(0)), static_cast<int>(w.dim(1)), static_cast<int>(y.dim(2)));
  PG_CUDA_LAUNCH_CHECK(op);
}

void attn_gate_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dout, float amp, float c,
                        const Tensor& dx, const Tensor& dy, const Tensor& dw) {
  const char* op = "attn_gate_backward";
  const int64_t N = x.dim(0);
  if (N == 0) return;
  const int H = static_cast<int>(w.dim(0)), W = static_cast<int>(w.dim(1));
  const size_t smem = static_cast<size_t>(H) * W * sizeof(float);  // <= 32 KB (checked by the caller)
  const DevPtr dxp = dx.defined() ? dev_ptr(op, "dx", dx) : DevPtr{nullptr, Kind::F32};
  // At most 1024 blocks, so each dw element sees at most 1024 global atomic adds.
  bwd_kernel<<<grid_for(N, kWarps, 1024), kThreads, smem, stream()>>>(
      dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "y", y), dev_ptr(op, "dout", dout), amp, c, dxp,
      dev_ptr(op, "dy", dy), dw.ptr<float>(), N, x.dim(1), H, W, static_cast<int>(y.dim(2)));
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
