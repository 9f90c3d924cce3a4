// CUDA XSA (TECHNIQUES.md §5.7): one warp per (token, kv head). The warp loads the value vector once,
// normalizes it and projects it out of every query head of the group (the GQA form: v is never
// repeated). Each lane holds head dims lane, lane + 32, ... (head_dim <= 256).
#include "ops/cuda_common.cuh"
#include "ops/xsa.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kMaxPerLane = 8;
constexpr int kWarpsPerBlock = 8;

// Loads v's row into vh (normalized); returns the clamped norm, *clamped when the norm hit the eps.
__device__ __forceinline__ float load_unit(DevPtr v, int64_t base, int D, int lane, float vh[kMaxPerLane],
                                           bool* clamped) {
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int d = lane + 32 * j;
    vh[j] = d < D ? load1(v, base + d) : 0.f;
    ss += vh[j] * vh[j];
  }
  const float raw = sqrtf(warp_sum(ss));
  const float eps = static_cast<float>(kXsaNormEps);
  *clamped = !(raw > eps);
  const float n = *clamped ? eps : raw;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) vh[j] /= n;
  return n;
}

__global__ void xsa_fwd_kernel(DevPtr y, DevPtr v, DevPtr out, int64_t rows, int Hq, int Hkv, int D) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int G = Hq / Hkv;
  for (int64_t w = warp; w < rows * Hkv; w += nwarps) {
    const int64_t r = w / Hkv;
    const int kv = static_cast<int>(w % Hkv);
    float vh[kMaxPerLane];
    bool clamped;
    load_unit(v, w * D, D, lane, vh, &clamped);
    for (int g = 0; g < G; ++g) {
      const int64_t o = (r * Hq + static_cast<int64_t>(kv) * G + g) * D;
      float yv[kMaxPerLane], a = 0.f;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int d = lane + 32 * j;
        yv[j] = d < D ? load1(y, o + d) : 0.f;
        a += yv[j] * vh[j];
      }
      a = warp_sum(a);
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < D) store1(out, o + d, yv[j] - a * vh[j]);
      }
    }
  }
}

__global__ void xsa_bwd_kernel(DevPtr y, DevPtr v, DevPtr dout, DevPtr dy, DevPtr dv, int64_t rows, int Hq, int Hkv,
                               int D) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int G = Hq / Hkv;
  for (int64_t w = warp; w < rows * Hkv; w += nwarps) {
    const int64_t r = w / Hkv;
    const int kv = static_cast<int>(w % Hkv);
    float vh[kMaxPerLane], dvh[kMaxPerLane] = {};
    bool clamped;
    const float n = load_unit(v, w * D, D, lane, vh, &clamped);
    for (int g = 0; g < G; ++g) {
      const int64_t o = (r * Hq + static_cast<int64_t>(kv) * G + g) * D;
      float yv[kMaxPerLane], go[kMaxPerLane], a = 0.f, b = 0.f;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int d = lane + 32 * j;
        yv[j] = d < D ? load1(y, o + d) : 0.f;
        go[j] = d < D ? load1(dout, o + d) : 0.f;
        a += yv[j] * vh[j];
        b += go[j] * vh[j];
      }
      a = warp_sum(a);
      b = warp_sum(b);
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int d = lane + 32 * j;
        dvh[j] -= a * go[j] + b * yv[j];
        if (d < D) store1(dy, o + d, go[j] - b * vh[j]);
      }
    }
    float c = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) c += vh[j] * dvh[j];
    c = clamped ? 0.f : warp_sum(c);
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < D) store1(dv, w * D + d, (dvh[j] - vh[j] * c) / n);
    }
  }
}

struct Dims {
  int64_t rows;
  int Hq, Hkv, D;
};

Dims dims_of(const char* op, const Tensor& y, const Tensor& v) {
  const Dims d{y.dim(0) * y.dim(1), static_cast<int>(y.dim(2)), static_cast<int>(v.dim(2)), static_cast<int>(y.dim(3))};
  PG_CHECK(d.D <= 32 * kMaxPerLane, "{}: head dim {} exceeds the kernel's {}", op, d.D, 32 * kMaxPerLane);
  return d;
}

unsigned blocks_for(const Dims& d) { return grid_for(d.rows * d.Hkv, kWarpsPerBlock); }

}  // namespace

void xsa_forward(const Tensor& y, const Tensor& v, const Tensor& out) {
  const char* op = "xsa_forward";
  const Dims d = dims_of(op, y, v);
  if (d.rows == 0) return;
  // A warp-uniform clamped flag: `clamped` comes from a warp_sum, so every lane agrees.
  xsa_fwd_kernel<<<blocks_for(d), 32 * kWarpsPerBlock, 0, stream()>>>(
      dev_ptr(op, "y", y), dev_ptr(op, "v", v), dev_ptr(op, "out", out), d.rows, d.Hq, d.Hkv, d.D);
  PG_CUDA_LAUNCH_CHECK(op);
}

void xsa_backward(const Tensor& y, const Tensor& v, const Tensor& dout, const Tensor& dy, const Tensor& dv) {
  const char* op = "xsa_backward";
  const Dims d = dims_of(op, y, v);
  if (d.rows == 0) return;
  xsa_bwd_kernel<<<blocks_for(d), 32 * kWarpsPerBlock, 0, stream()>>>(
      dev_ptr(op, "y", y), dev_ptr(op, "v", v), dev_ptr(op, "dout", dout), dev_ptr(op, "dy", dy),
      dev_ptr(op, "dv", dv), d.rows, d.Hq, d.Hkv, d.D);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
