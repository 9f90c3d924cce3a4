#pragma once
// Plain (no tensor core) attention kernels: the fallback for f32 tensors and head_dim != 64.
// One warp per row; lane l holds dims l, l + 32, ... (head_dim <= 256). Correct and simple, not fast.
#include <cstdint>

#include "ops/attention_mma.cuh"

namespace pgolf::ops::cuda::attn {

constexpr int kMaxSimpleDim = 256;
constexpr int kSimplePerLane = kMaxSimpleDim / 32;

__device__ __forceinline__ float load_elem(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_elem(const uint16_t* p, int64_t i) {
  return __uint_as_float(static_cast<uint32_t>(p[i]) << 16);
}
__device__ __forceinline__ void store_elem(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_elem(uint16_t* p, int64_t i, float v) {
  p[i] = static_cast<uint16_t>(pack_bf16(v, 0.f) & 0xffffu);
}

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

template <class E>
struct SimpleArgs {
  const E *q, *k, *v, *out, *dout;
  const int32_t* doc;
  const float* lse;
  E *out_w, *dq, *dk, *dv;
  float* lse_w;
  int B, T, Hq, Hkv, D;
  bool causal;
  int window;
  float scale;
};

// Loads row `base` (D elements, lane-strided) into registers, zero past D.
template <class E>
__device__ __forceinline__ void load_row(float (&r)[kSimplePerLane], const E* p, int64_t base, int D, int lane) {
#pragma unroll
  for (int u = 0; u < kSimplePerLane; ++u) {
    int d = lane + 32 * u;
    r[u] = d < D ? load_elem(p, base + d) : 0.f;
  }
}
__device__ __forceinline__ float dot_row(const float (&x)[kSimplePerLane], const float (&y)[kSimplePerLane]) {
  float s = 0.f;
#pragma unroll
  for (int u = 0; u < kSimplePerLane; ++u) s += x[u] * y[u];
  return warp_sum(s);
}

// Warp per (b, i, h): online softmax over the visible keys.
template <class E>
__global__ void simple_fwd_kernel(SimpleArgs<E> a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(a.B) * a.T * a.Hq) return;
  const int h = static_cast<int>(row % a.Hq), i = static_cast<int>((row / a.Hq) % a.T);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.Hq) * a.T));
  const int hk = h / (a.Hq / a.Hkv);
  const RowRange rr = row_range(i, a.T, a.causal, a.window, a.doc ? a.doc + static_cast<int64_t>(b) * a.T : nullptr);
  float q[kSimplePerLane], o[kSimplePerLane] = {};
  load_row(q, a.q, row * a.D, a.D, lane);
  float m = -INFINITY, l = 0.f;
  for (int j = rr.lo; j <= rr.hi; ++j) {
    float kr[kSimplePerLane], vr[kSimplePerLane];
    const int64_t kv = ((static_cast<int64_t>(b) * a.T + j) * a.Hkv + hk) * a.D;
    load_row(kr, a.k, kv, a.D, lane);
    load_row(vr, a.v, kv, a.D, lane);
    const float s = dot_row(q, kr) * a.scale;
    const float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
    l = l * corr + p;
#pragma unroll
    for (int u = 0; u < kSimplePerLane; ++u) o[u] = o[u] * corr + p * vr[u];
    m = mn;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int u = 0; u < kSimplePerLane; ++u)
    if (lane + 32 * u < a.D) store_elem(a.out_w, row * a.D + lane + 32 * u, o[u] * inv);
  if (lane == 0) a.lse_w[(static_cast<int64_t>(b) * a.Hq + h) * a.T + i] = l > 0.f ? m + logf(l) : -INFINITY;
}

// Warp per query row (b, i, h): dq = scale * sum_j P_ij (dP_ij - Dsum_i) k_j.
template <class E>
__global__ void simple_bwd_dq_kernel(SimpleArgs<E> a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(a.B) * a.T * a.Hq) return;
  const int h = static_cast<int>(row % a.Hq), i = static_cast<int>((row / a.Hq) % a.T);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.Hq) * a.T));
  const int hk = h / (a.Hq / a.Hkv);
  const RowRange rr = row_range(i, a.T, a.causal, a.window, a.doc ? a.doc + static_cast<int64_t>(b) * a.T : nullptr);
  float q[kSimplePerLane], o[kSimplePerLane], dout[kSimplePerLane], dq[kSimplePerLane] = {};
  load_row(q, a.q, row * a.D, a.D, lane);
  load_row(o, a.out, row * a.D, a.D, lane);
  load_row(dout, a.dout, row * a.D, a.D, lane);
  const float dsum = dot_row(dout, o);
  const float lse = a.lse[(static_cast<int64_t>(b) * a.Hq + h) * a.T + i];
  for (int j = rr.lo; j <= rr.hi; ++j) {
    float kr[kSimplePerLane], vr[kSimplePerLane];
    const int64_t kv = ((static_cast<int64_t>(b) * a.T + j) * a.Hkv + hk) * a.D;
    load_row(kr, a.k, kv, a.D, lane);
    load_row(vr, a.v, kv, a.D, lane);
    const float p = expf(dot_row(q, kr) * a.scale - lse);
    const float ds = p * (dot_row(dout, vr) - dsum);
#pragma unroll
    for (int u = 0; u < kSimplePerLane; ++u) dq[u] += ds * kr[u];
  }
#pragma unroll
  for (int u = 0; u < kSimplePerLane; ++u)
    if (lane + 32 * u < a.D) store_elem(a.dq, row * a.D + lane + 32 * u, dq[u] * a.scale);
}

// Warp per key row (b, j, hk): sums over every query head of the group and every query that sees j.
template <class E>
__global__ void simple_bwd_dkv_kernel(SimpleArgs<E> a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(a.B) * a.T * a.Hkv) return;
  const int hk = static_cast<int>(row % a.Hkv), j = static_cast<int>((row / a.Hkv) % a.T);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.Hkv) * a.T));
  const int group = a.Hq / a.Hkv;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * a.T : nullptr;
  float kr[kSimplePerLane], vr[kSimplePerLane], dk[kSimplePerLane] = {}, dv[kSimplePerLane] = {};
  load_row(kr, a.k, row * a.D, a.D, lane);
  load_row(vr, a.v, row * a.D, a.D, lane);
  const int i_begin = a.causal || a.window > 0 ? j : 0;
  for (int i = i_begin; i < a.T; ++i) {
    const RowRange rr = row_range(i, a.T, a.causal, a.window, doc_b);
    if (j < rr.lo || j > rr.hi) continue;
    for (int h = hk * group; h < (hk + 1) * group; ++h) {
      const int64_t qrow = ((static_cast<int64_t>(b) * a.T + i) * a.Hq + h) * a.D;
      float q[kSimplePerLane], o[kSimplePerLane], dout[kSimplePerLane];
      load_row(q, a.q, qrow, a.D, lane);
      load_row(o, a.out, qrow, a.D, lane);
      load_row(dout, a.dout, qrow, a.D, lane);
      const float lse = a.lse[(static_cast<int64_t>(b) * a.Hq + h) * a.T + i];
      const float p = expf(dot_row(q, kr) * a.scale - lse);
      const float ds = p * (dot_row(dout, vr) - dot_row(dout, o));
#pragma unroll
      for (int u = 0; u < kSimplePerLane; ++u) dv[u] += p * dout[u], dk[u] += ds * q[u];
    }
  }
#pragma unroll
  for (int u = 0; u < kSimplePerLane; ++u) {
    if (lane + 32 * u < a.D) {
      store_elem(a.dk, row * a.D + lane + 32 * u, dk[u] * a.scale);
      store_elem(a.dv, row * a.D + lane + 32 * u, dv[u]);
    }
  }
}

}  // namespace pgolf::ops::cuda::attn
