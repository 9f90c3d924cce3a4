// CUDA XSA (TECHNIQUES.md §5.7). Two paths:
//  - vector path (the training shapes: D % 8 == 0, D / 8 a power of two, G = Hq / Hkv in {1, 2, 4, 8},
//    16-byte aligned tensors): a team of L = D / 8 lanes owns one (token, kv head) item, each lane 8
//    consecutive dims read with one 16-byte load. The team issues every load of its item (v and the
//    G query heads of y, plus dout in the backward) before the first reduction, so a warp keeps
//    (1 + G) or (1 + 2 G) rows of D in flight instead of one 64-byte scalar load at a time; the dot
//    products are team shuffles. (The general path below ran at ~0.8 TB/s at the record shapes.)
//  - general path (any D <= 256, any group size, misaligned views): one warp per item, lane l holding
//    dims l, l + 32, ... with scalar loads.
// Both load the value vector once, normalize it and project it out of every query head of the group
// (the GQA form: v is never repeated), with fp32 arithmetic.
#include <type_traits>

#include "ops/cuda_common.cuh"
#include "ops/xsa.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

// ---------------------------------------------------------------------------------------------
// Vector path.

constexpr int kVecThreads = 256;

// Sum over the team of L lanes (L a power of two; teams aligned in the warp, so the xor stays inside).
__device__ __forceinline__ float team_sum(float v, int L) {
  for (int o = L >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The team's item and this lane's first dim; dead lanes (past the last item) still take part in the
// shuffles, on item 0's data, and store nothing.
struct Team {
  int64_t item;
  int d0;
  bool live;
};

__device__ __forceinline__ Team team_of(int64_t items, int log2L) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kVecThreads + threadIdx.x;
  const int64_t item = tid >> log2L;
  const bool live = item < items;
  return Team{live ? item : 0, static_cast<int>(tid & ((1 << log2L) - 1)) * 8, live};
}

// vh = v / max(|v|, eps) over the team's 8-dim slices; returns the clamped norm, *clamped when the norm
// hit the eps (team-uniform: it comes from a team sum).
__device__ __forceinline__ float unit8(float vh[8], int L, bool* clamped) {
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) ss += vh[j] * vh[j];
  const float raw = sqrtf(team_sum(ss, L));
  const float eps = static_cast<float>(kXsaNormEps);
  *clamped = !(raw > eps);
  const float n = *clamped ? eps : raw;
#pragma unroll
  for (int j = 0; j < 8; ++j) vh[j] /= n;
  return n;
}

// y, out: (items * G, D) ; v: (items, D). out may alias y (each lane reads its slice before writing it).
template <int G>
__global__ void __launch_bounds__(kVecThreads)
    xsa_fwd_vec_kernel(DevPtr y, DevPtr v, DevPtr out, int64_t items, int D, int log2L) {
  const int L = 1 << log2L;
  const Team t = team_of(items, log2L);
  float vh[8], yv[G][8];
  load8(v, t.item * D + t.d0, vh);
#pragma unroll
  for (int g = 0; g < G; ++g) load8(y, (t.item * G + g) * D + t.d0, yv[g]);
  bool clamped;
  unit8(vh, L, &clamped);
  float a[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    a[g] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) a[g] += yv[g][j] * vh[j];
  }
#pragma unroll
  for (int g = 0; g < G; ++g) a[g] = team_sum(a[g], L);
  if (!t.live) return;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int j = 0; j < 8; ++j) yv[g][j] -= a[g] * vh[j];
    store8(out, (t.item * G + g) * D + t.d0, yv[g]);
  }
}

// dy may alias dout (each lane reads its slice before writing it).
template <int G>
__global__ void __launch_bounds__(kVecThreads)
    xsa_bwd_vec_kernel(DevPtr y, DevPtr v, DevPtr dout, DevPtr dy, DevPtr dv, int64_t items, int D, int log2L) {
  const int L = 1 << log2L;
  const Team t = team_of(items, log2L);
  float vh[8], yv[G][8], go[G][8];
  load8(v, t.item * D + t.d0, vh);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    load8(y, (t.item * G + g) * D + t.d0, yv[g]);
    load8(dout, (t.item * G + g) * D + t.d0, go[g]);
  }
  bool clamped;
  const float n = unit8(vh, L, &clamped);
  float a[G], b[G];  // y . vh, dout . vh per query head
#pragma unroll
  for (int g = 0; g < G; ++g) {
    a[g] = b[g] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      a[g] += yv[g][j] * vh[j];
      b[g] += go[g][j] * vh[j];
    }
  }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    a[g] = team_sum(a[g], L);
    b[g] = team_sum(b[g], L);
  }
  float dvh[8] = {};
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      dvh[j] -= a[g] * go[g][j] + b[g] * yv[g][j];
      go[g][j] -= b[g] * vh[j];  // go becomes dy
    }
  }
  float c = 0.f;  // vh . dvh (the normalization's radial part; absent when the norm is clamped)
#pragma unroll
  for (int j = 0; j < 8; ++j) c += vh[j] * dvh[j];
  c = team_sum(c, L);
  if (clamped) c = 0.f;
  if (!t.live) return;
#pragma unroll
  for (int g = 0; g < G; ++g) store8(dy, (t.item * G + g) * D + t.d0, go[g]);
#pragma unroll
  for (int j = 0; j < 8; ++j) dvh[j] = (dvh[j] - vh[j] * c) / n;
  store8(dv, t.item * D + t.d0, dvh);
}

// ---------------------------------------------------------------------------------------------
// General path: one warp per (token, kv head), each lane holding head dims lane, lane + 32, ...

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

// log2(D / 8) when the vector path applies to these shapes and pointers, else -1.
int vec_log2_lanes(const Dims& d, std::initializer_list<DevPtr> ps) {
  const int G = d.Hq / d.Hkv;
  if (d.D % 8 != 0 || G > 8 || (G & (G - 1)) != 0) return -1;
  const int L = d.D / 8;
  if (L > 32 || (L & (L - 1)) != 0) return -1;
  for (const DevPtr& p : ps)
    if (!aligned16(p.p)) return -1;
  int log2L = 0;
  while ((1 << log2L) < L) ++log2L;
  return log2L;
}

unsigned vec_blocks(const Dims& d, int log2L) {
  const int64_t threads = (d.rows * d.Hkv) << log2L;
  const int64_t blocks = (threads + kVecThreads - 1) / kVecThreads;
  PG_CHECK(blocks <= 0x7fffffff, "xsa: {} items is too many for one launch", d.rows * d.Hkv);
  return static_cast<unsigned>(blocks);
}

// Calls f(std::integral_constant<int, G>) for the group sizes the vector kernels are built for.
template <class F>
void with_group(int G, F&& f) {
  switch (G) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

}  // namespace

void xsa_forward(const Tensor& y, const Tensor& v, const Tensor& out) {
  const char* op = "xsa_forward";
  const Dims d = dims_of(op, y, v);
  if (d.rows == 0) return;
  const DevPtr yp = dev_ptr(op, "y", y), vp = dev_ptr(op, "v", v), op_ = dev_ptr(op, "out", out);
  if (const int log2L = vec_log2_lanes(d, {yp, vp, op_}); log2L >= 0) {
    with_group(d.Hq / d.Hkv, [&](auto gc) {
      xsa_fwd_vec_kernel<decltype(gc)::value><<<vec_blocks(d, log2L), kVecThreads, 0, stream()>>>(
          yp, vp, op_, d.rows * d.Hkv, d.D, log2L);
    });
  } else {
    // A warp-uniform clamped flag: `clamped` comes from a warp_sum, so every lane agrees.
    xsa_fwd_kernel<<<blocks_for(d), 32 * kWarpsPerBlock, 0, stream()>>>(yp, vp, op_, d.rows, d.Hq, d.Hkv, d.D);
  }
  PG_CUDA_LAUNCH_CHECK(op);
}

void xsa_backward(const Tensor& y, const Tensor& v, const Tensor& dout, const Tensor& dy, const Tensor& dv) {
  const char* op = "xsa_backward";
  const Dims d = dims_of(op, y, v);
  if (d.rows == 0) return;
  const DevPtr yp = dev_ptr(op, "y", y), vp = dev_ptr(op, "v", v), gp = dev_ptr(op, "dout", dout),
               dyp = dev_ptr(op, "dy", dy), dvp = dev_ptr(op, "dv", dv);
  if (const int log2L = vec_log2_lanes(d, {yp, vp, gp, dyp, dvp}); log2L >= 0) {
    with_group(d.Hq / d.Hkv, [&](auto gc) {
      xsa_bwd_vec_kernel<decltype(gc)::value><<<vec_blocks(d, log2L), kVecThreads, 0, stream()>>>(
          yp, vp, gp, dyp, dvp, d.rows * d.Hkv, d.D, log2L);
    });
  } else {
    xsa_bwd_kernel<<<blocks_for(d), 32 * kWarpsPerBlock, 0, stream()>>>(yp, vp, gp, dyp, dvp, d.rows, d.Hq, d.Hkv,
                                                                       d.D);
  }
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
