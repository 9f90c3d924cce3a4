// CUDA q/k preparation (ops/qk_prep.h): one warp per (row, head) vector of D <= 256 elements, held in
// registers (lane l owns dims l, l+32, ...; the per-lane count is a template parameter so D = 64 does
// no dead work); the rotate-half partner of a dim is read through a small per-warp shared buffer.
// Inverse frequencies as in rope.cu (host double, rounded to float). The gain gradient: the backward
// grid is sized so every warp sees a single head, sums it over its rows in registers and adds it once
// with an atomic.
#include <cmath>
#include <numeric>
#include <type_traits>

#include "ops/cuda_common.cuh"
#include "ops/qk_prep.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kMaxD = 256, kWarps = 8;

struct InvFreq {
  float v[kMaxD / 2];
};

// cos/sin of pos * inv for the rotate-half pair starting at dim lo. The angle (up to ~1e4 rad at long
// contexts) is first reduced to [-pi, pi] with a two-constant Cody-Waite split, so the fast hardware
// sincos is accurate to ~1e-6 absolute: far below bf16's resolution, and within the f32 parity tolerance.
__device__ __forceinline__ void rot_cs(int lo, float pos, const InvFreq& inv, float* c, float* s) {
  const float a = pos * inv.v[lo];
  const float k = rintf(a * 0.15915494309189535f);
  const float r = fmaf(-k, 6.28125f, fmaf(-k, 1.9353071795864769e-3f, a));
  __sincosf(r, s, c);
}

// Lane l owns dims l + 32 j (j < P = ceil(D / 32)); the rotate-half partner of a dim is exchanged
// through a per-warp shared buffer. Indices are 32-bit (the callers check items * D < 2^31).
template <class T, int P>
__global__ void __launch_bounds__(kWarps * 32) qk_fwd_kernel(const T* __restrict__ x, const float* __restrict__ gain,
                                                             T* __restrict__ y, float* __restrict__ rstd, int items,
                                                             int T_, int H, int D, int half, int pos_offset,
                                                             InvFreq inv, float eps) {
  __shared__ float smem[kWarps * P * 32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int item = blockIdx.x * kWarps + w;
  if (item >= items) return;
  float* buf = smem + w * P * 32;
  const int h = item % H;
  const float pos = static_cast<float>(pos_offset + (item / H) % T_);
  const T* xr = x + static_cast<int64_t>(item) * D;
  float v[P];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int d = lane + 32 * j;
    v[j] = d < D ? to_f32(xr[d]) : 0.f;
    ss += v[j] * v[j];
  }
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(D) + eps);
  if (lane == 0) rstd[item] = r;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    v[j] *= r;
    buf[lane + 32 * j] = v[j];
  }
  __syncwarp();
  const float g = gain != nullptr ? gain[h] : 1.f;
  T* yr = y + static_cast<int64_t>(item) * D;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int d = lane + 32 * j;
    if (d >= D) continue;
    float out = v[j];
    if (d < 2 * half) {
      float c, s;
      rot_cs(d < half ? d : d - half, pos, inv, &c, &s);
      out = d < half ? v[j] * c - buf[d + half] * s : v[j] * c + buf[d - half] * s;
    }
    yr[d] = from_f32<T>(g * out);
  }
}

// A warp walks items first, first + nwarps, ...; the grid makes nwarps a multiple of H so every
// warp keeps one head and adds its gain gradient once.
template <class T, int P>
__global__ void __launch_bounds__(kWarps * 32) qk_bwd_kernel(const T* __restrict__ x, const float* __restrict__ gain,
                                                             const float* __restrict__ rstd, const T* __restrict__ dy,
                                                             T* __restrict__ dx, float* __restrict__ dgain, int items,
                                                             int T_, int H, int D, int half, int pos_offset,
                                                             InvFreq inv) {
  __shared__ float smem[kWarps * 2 * P * 32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float* bn = smem + w * 2 * P * 32;  // normalized x
  float* bd = bn + P * 32;            // dy
  const int nwarps = gridDim.x * kWarps;
  const int first = blockIdx.x * kWarps + w;
  const int h = first % H;
  const float g = gain != nullptr ? gain[h] : 1.f;
  float dg = 0.f;
  for (int item = first; item < items; item += nwarps) {
    const float pos = static_cast<float>(pos_offset + (item / H) % T_);
    const float r = rstd[item];
    const T* xr = x + static_cast<int64_t>(item) * D;
    const T* dr = dy + static_cast<int64_t>(item) * D;
    float n[P], dv[P];
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int d = lane + 32 * j;
      n[j] = d < D ? to_f32(xr[d]) * r : 0.f;
      dv[j] = d < D ? to_f32(dr[d]) : 0.f;
      bn[lane + 32 * j] = n[j];
      bd[lane + 32 * j] = dv[j];
    }
    __syncwarp();
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int d = lane + 32 * j;
      if (d >= D) continue;
      float u = n[j], dn = g * dv[j];
      if (d < 2 * half) {
        float c, s;
        rot_cs(d < half ? d : d - half, pos, inv, &c, &s);
        if (d < half) {
          u = n[j] * c - bn[d + half] * s;
          dn = g * (dv[j] * c + bd[d + half] * s);
        } else {
          u = n[j] * c + bn[d - half] * s;
          dn = g * (dv[j] * c - bd[d - half] * s);
        }
      }
      dg += dv[j] * u;
      dot += dn * n[j];
      dv[j] = dn;  // reuse: dn from here on
    }
    dot = warp_sum(dot) / static_cast<float>(D);
    T* out = dx + static_cast<int64_t>(item) * D;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int d = lane + 32 * j;
      if (d < D) out[d] = from_f32<T>(r * (dv[j] - n[j] * dot));
    }
    __syncwarp();
  }
  if (dgain != nullptr) {
    dg = warp_sum(dg);
    if (lane == 0 && dg != 0.f) atomicAdd(dgain + h, dg);
  }
}

// ---------------------------------------------------------------------------------------------
// The vector path (the training shapes): a group of G = D / 8 lanes (a power of two) holds one head
// vector, each lane 8 consecutive dims in one 16-byte load; the rotate-half partner of a lane's dims
// lives in lane ^ (half / 8), read with a shuffle. Far fewer instructions per element than a warp
// per vector, which is what bounded the kernels above at D = 64. Needs D % 8 == 0, G a power of two
// and half / 8 a power of two (or rot_dims == 0): rot_dims 16, 32, 64 ... at D = 64.

// Sum over the G lanes of a group (G a power of two, groups aligned in the warp).
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Items per group and pass: each group loads kUnroll head vectors before working on the first, so a
// thread keeps 16 kUnroll (forward) or 32 kUnroll (backward) bytes in flight rather than one vector's.
// The launch bounds keep the bf16 kernels at full (forward) and half (backward) occupancy, so the
// unrolling adds bytes in flight per SM instead of trading them for resident warps.
constexpr int kUnroll = 2;

// y = gain R(x r) for one item held as 8 dims per lane (v: x in, scaled by r on return); out: y / gain.
// Every lane of the warp must call it (shuffles); `it` is the item (any valid one for dead lanes).
template <int G>
__device__ __forceinline__ float norm_rotate(float v[8], float out[8], int it, int l, int T_, int H, int half,
                                             int pos_offset, const InvFreq& inv, float eps) {
  constexpr int D = 8 * G;
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
  ss = group_sum<G>(ss);
  const float r = rsqrtf(ss / static_cast<float>(D) + eps);
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] *= r;
  const int d0 = 8 * l, hl = half / 8;  // hl: lane distance of the partner (0 when nothing rotates)
  if (hl > 0) {
    float pv[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) pv[j] = __shfl_xor_sync(0xffffffffu, v[j], hl);
    const float pos = static_cast<float>(pos_offset + (it / H) % T_);
    const bool first = d0 < half, rotated = d0 < 2 * half;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float c = 1.f, sn = 0.f;
      if (rotated) rot_cs(first ? d0 + j : d0 + j - half, pos, inv, &c, &sn);
      out[j] = !rotated ? v[j] : first ? v[j] * c - pv[j] * sn : v[j] * c + pv[j] * sn;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = v[j];
  }
  return r;
}

// A block's 256 / G groups take kUnroll consecutive spans of 256 / G items (coalesced per span).
template <class T, int G>
__global__ void __launch_bounds__(256, sizeof(T) == 2 ? 8 : 6)
    qk_fwd_vec_kernel(const T* __restrict__ x, const float* __restrict__ gain, T* __restrict__ y,
                      float* __restrict__ rstd, int items, int T_, int H, int half, int pos_offset, InvFreq inv,
                      float eps) {
  constexpr int D = 8 * G, kGroups = 256 / G;
  const int l = threadIdx.x % G;
  const int first = blockIdx.x * kGroups * kUnroll + static_cast<int>(threadIdx.x) / G;
  float v[kUnroll][8];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int item = first + u * kGroups;
    load8t(x + static_cast<int64_t>(item < items ? item : 0) * D + 8 * l, v[u]);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int item = first + u * kGroups;
    const bool live = item < items;  // dead lanes still take part in the shuffles
    float out[8];
    const float r = norm_rotate<G>(v[u], out, live ? item : 0, l, T_, H, half, pos_offset, inv, eps);
    if (!live) continue;
    const float g = gain != nullptr ? gain[item % H] : 1.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] *= g;
    store8t(y + static_cast<int64_t>(item) * D + 8 * l, out);
    if (l == 0) rstd[item] = r;
  }
}

// Groups walk items with a stride of the total group count, a multiple of H, so a group keeps one
// head and adds its gain gradient once at the end. Each pass takes kUnroll items, ngroups apart, and
// loads all of them first.
template <class T, int G>
__global__ void __launch_bounds__(256, sizeof(T) == 2 ? 4 : 3)
    qk_bwd_vec_kernel(const T* __restrict__ x, const float* __restrict__ gain, const float* __restrict__ rstd,
                      const T* __restrict__ dy, T* __restrict__ dx, float* __restrict__ dgain, int items, int T_,
                      int H, int half, int pos_offset, InvFreq inv) {
  constexpr int D = 8 * G;
  const int tid = blockIdx.x * blockDim.x + threadIdx.x;
  const int group = tid / G, l = tid % G, ngroups = gridDim.x * blockDim.x / G;
  const int h = group % H;
  const float g = gain != nullptr ? gain[h] : 1.f;
  const int d0 = 8 * l, hl = half / 8;
  const bool first = d0 < half, rotated = hl > 0 && d0 < 2 * half;
  float dg = 0.f;
  // Every lane of a warp runs the same number of iterations (the shuffles need the whole warp):
  // the bound is the warp's first group's count, later groups of the warp skip work when past the end.
  const int warp_first_group = (tid & ~31) / G;
  for (int base = warp_first_group; base < items; base += kUnroll * ngroups) {
    int its[kUnroll];
    bool lives[kUnroll];
    float rs[kUnroll], xs[kUnroll][8], ds[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int item = base + u * ngroups + (group - warp_first_group);
      lives[u] = item < items;
      its[u] = lives[u] ? item : 0;
      rs[u] = rstd[its[u]];
      load8t(x + static_cast<int64_t>(its[u]) * D + d0, xs[u]);
      load8t(dy + static_cast<int64_t>(its[u]) * D + d0, ds[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int it = its[u];
      const bool live = lives[u];
      const float r = rs[u];
      float* n = xs[u];
      const float* d = ds[u];
#pragma unroll
      for (int j = 0; j < 8; ++j) n[j] *= r;
      float dn[8], uu[8];
      if (hl > 0) {
        float pn[8], pd[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          pn[j] = __shfl_xor_sync(0xffffffffu, n[j], hl);
          pd[j] = __shfl_xor_sync(0xffffffffu, d[j], hl);
        }
        const float pos = static_cast<float>(pos_offset + (it / H) % T_);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          float c = 1.f, sn = 0.f;
          if (rotated) rot_cs(first ? d0 + j : d0 + j - half, pos, inv, &c, &sn);
          if (!rotated) {
            uu[j] = n[j];
            dn[j] = g * d[j];
          } else if (first) {
            uu[j] = n[j] * c - pn[j] * sn;
            dn[j] = g * (d[j] * c + pd[j] * sn);
          } else {
            uu[j] = n[j] * c + pn[j] * sn;
            dn[j] = g * (d[j] * c - pd[j] * sn);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          uu[j] = n[j];
          dn[j] = g * d[j];
        }
      }
      float dot = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        dot += dn[j] * n[j];
        if (live) dg += d[j] * uu[j];
      }
      dot = group_sum<G>(dot) / static_cast<float>(D);
      if (!live) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) dn[j] = r * (dn[j] - n[j] * dot);
      store8t(dx + static_cast<int64_t>(it) * D + d0, dn);
    }
  }
  if (dgain != nullptr) {
    dg = group_sum<G>(dg);
    if (l == 0 && dg != 0.f) atomicAdd(dgain + h, dg);
  }
}

// The group width G = D / 8 when the vector path applies, else 0.
int vec_group(int64_t D, int half, const Tensor& x, std::initializer_list<const Tensor*> others) {
  if (D % 8 != 0 || D / 8 > 32 || ((D / 8) & (D / 8 - 1)) != 0) return 0;
  const int hl = half / 8;
  if (half % 8 != 0 || (hl & (hl - 1)) != 0) return 0;
  auto aligned = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()) % 16 == 0; };
  if (!aligned(x)) return 0;
  for (const Tensor* t : others)
    if (!aligned(*t)) return 0;
  return static_cast<int>(D / 8);
}

template <class F>
void with_group(int G, F&& f) {
  switch (G) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: f(std::integral_constant<int, 32>{}); break;
  }
}

InvFreq make_inv(int rot_dims, float base) {
  InvFreq inv{};
  for (int i = 0; i < rot_dims / 2; ++i)
    inv.v[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / static_cast<double>(rot_dims)));
  return inv;
}

// Backward grid: about 4 resident waves of warps, a multiple of H / gcd(H, kWarps) blocks so that
// every warp keeps one head.
unsigned bwd_blocks(int64_t items, int H) {
  const int64_t unit = H / std::gcd(H, kWarps);
  int64_t b = std::min<int64_t>((items + kWarps - 1) / kWarps, 132 * 8 * 4);
  b = (b + unit - 1) / unit * unit;
  return static_cast<unsigned>(std::max<int64_t>(b, unit));
}

// Calls f(std::integral_constant<int, P>) with P = ceil(D / 32) rounded up to 1, 2, 4 or 8.
template <class F>
void with_per_lane(int64_t D, F&& f) {
  if (D <= 32) f(std::integral_constant<int, 1>{});
  else if (D <= 64) f(std::integral_constant<int, 2>{});
  else if (D <= 128) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

// 32-bit indexing inside the kernels: element counts and positions must fit.
void check_index_range(const char* op, const Tensor& x, int64_t max_pos) {
  PG_CHECK(x.numel() < (int64_t{1} << 31) && max_pos < (int64_t{1} << 24), "{}: {} with positions up to {} is "
           "beyond the kernel's 32-bit indexing (2^31 elements, 2^24 positions)", op, x.desc(), max_pos);
}

void check_cuda_args(const char* op, const Tensor& x, std::initializer_list<const Tensor*> same_dtype) {
  PG_CHECK(x.dim(3) <= kMaxD, "{}: head dim {} is above the kernel's {}", op, x.dim(3), kMaxD);
  for (const Tensor* t : same_dtype)
    PG_CHECK(t->dtype() == x.dtype(), "{}: the cuda kernel needs one activation dtype; x is {} but got {}", op,
             x.desc(), t->desc());
}

// The launch geometry of x (B, T, H, D), after the 32-bit indexing check.
struct Geo {
  int64_t T, D, items;
  int H;
  InvFreq inv;
};

Geo geometry(const char* op, const Tensor& x, int rot_dims, float base, int64_t pos_offset) {
  Geo g{x.dim(1), x.dim(3), x.dim(0) * x.dim(1) * x.dim(2), static_cast<int>(x.dim(2)), make_inv(rot_dims, base)};
  if (g.items > 0) check_index_range(op, x, pos_offset + g.T);
  return g;
}

}  // namespace

void qk_prep_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, int rot_dims,
                     float base, float eps, int64_t pos_offset) {
  const char* op = "qk_prep_forward";
  check_cuda_args(op, x, {&y});
  const Geo geo = geometry(op, x, rot_dims, base, pos_offset);
  const int64_t T_ = geo.T, D = geo.D, items = geo.items;
  const int H = geo.H;
  if (items == 0) return;
  const InvFreq& inv = geo.inv;
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  if (const int G = vec_group(D, rot_dims / 2, x, {&y}); G > 0) {
    const auto blocks = static_cast<unsigned>((items * G + 256 * kUnroll - 1) / (256 * kUnroll));
    with_group(G, [&](auto gw) {
      constexpr int GW = decltype(gw)::value;
      if (x.dtype() == DType::BF16)
        qk_fwd_vec_kernel<bf16, GW><<<blocks, 256, 0, stream()>>>(x.ptr<bf16>(), g, y.ptr<bf16>(), rstd.ptr<float>(),
                                                                  static_cast<int>(items), static_cast<int>(T_), H,
                                                                  rot_dims / 2, static_cast<int>(pos_offset), inv, eps);
      else
        qk_fwd_vec_kernel<float, GW><<<blocks, 256, 0, stream()>>>(x.ptr<float>(), g, y.ptr<float>(),
                                                                   rstd.ptr<float>(), static_cast<int>(items),
                                                                   static_cast<int>(T_), H, rot_dims / 2,
                                                                   static_cast<int>(pos_offset), inv, eps);
    });
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const unsigned blocks = static_cast<unsigned>((items + kWarps - 1) / kWarps);
  with_per_lane(D, [&](auto per) {
    constexpr int P = decltype(per)::value;
    if (x.dtype() == DType::BF16)
      qk_fwd_kernel<bf16, P><<<blocks, kWarps * 32, 0, stream()>>>(
          x.ptr<bf16>(), g, y.ptr<bf16>(), rstd.ptr<float>(), static_cast<int>(items), static_cast<int>(T_), H,
          static_cast<int>(D), rot_dims / 2, static_cast<int>(pos_offset), inv, eps);
    else
      qk_fwd_kernel<float, P><<<blocks, kWarps * 32, 0, stream()>>>(
          x.ptr<float>(), g, y.ptr<float>(), rstd.ptr<float>(), static_cast<int>(items), static_cast<int>(T_), H,
          static_cast<int>(D), rot_dims / 2, static_cast<int>(pos_offset), inv, eps);
  });
  PG_CUDA_LAUNCH_CHECK(op);
}

void qk_prep_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain, int rot_dims, float base, int64_t pos_offset) {
  const char* op = "qk_prep_backward";
  check_cuda_args(op, x, {&dy, &dx});
  const Geo geo = geometry(op, x, rot_dims, base, pos_offset);
  const int64_t T_ = geo.T, D = geo.D, items = geo.items;
  const int H = geo.H;
  if (items == 0) return;
  const InvFreq& inv = geo.inv;
  const float* g = gain.defined() ? gain.ptr<float>() : nullptr;
  float* dg = dgain.defined() ? dgain.ptr<float>() : nullptr;
  if (const int G = vec_group(D, rot_dims / 2, x, {&dy, &dx}); G > 0) {
    // Total groups a multiple of H (each keeps one head), about four resident waves; a group takes kUnroll
    // items per pass.
    const int64_t per_block = 256 / G;
    const int64_t unit = H / std::gcd(static_cast<int64_t>(H), per_block);
    int64_t blocks = std::min<int64_t>((items + per_block * kUnroll - 1) / (per_block * kUnroll), 132 * 8 * 4);
    blocks = std::max<int64_t>((blocks + unit - 1) / unit * unit, unit);
    with_group(G, [&](auto gw) {
      constexpr int GW = decltype(gw)::value;
      if (x.dtype() == DType::BF16)
        qk_bwd_vec_kernel<bf16, GW><<<static_cast<unsigned>(blocks), 256, 0, stream()>>>(
            x.ptr<bf16>(), g, rstd.ptr<float>(), dy.ptr<bf16>(), dx.ptr<bf16>(), dg, static_cast<int>(items),
            static_cast<int>(T_), H, rot_dims / 2, static_cast<int>(pos_offset), inv);
      else
        qk_bwd_vec_kernel<float, GW><<<static_cast<unsigned>(blocks), 256, 0, stream()>>>(
            x.ptr<float>(), g, rstd.ptr<float>(), dy.ptr<float>(), dx.ptr<float>(), dg, static_cast<int>(items),
            static_cast<int>(T_), H, rot_dims / 2, static_cast<int>(pos_offset), inv);
    });
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const unsigned blocks = bwd_blocks(items, H);
  with_per_lane(D, [&](auto per) {
    constexpr int P = decltype(per)::value;
    if (x.dtype() == DType::BF16)
      qk_bwd_kernel<bf16, P><<<blocks, kWarps * 32, 0, stream()>>>(
          x.ptr<bf16>(), g, rstd.ptr<float>(), dy.ptr<bf16>(), dx.ptr<bf16>(), dg, static_cast<int>(items),
          static_cast<int>(T_), H, static_cast<int>(D), rot_dims / 2, static_cast<int>(pos_offset), inv);
    else
      qk_bwd_kernel<float, P><<<blocks, kWarps * 32, 0, stream()>>>(
          x.ptr<float>(), g, rstd.ptr<float>(), dy.ptr<float>(), dx.ptr<float>(), dg, static_cast<int>(items),
          static_cast<int>(T_), H, static_cast<int>(D), rot_dims / 2, static_cast<int>(pos_offset), inv);
  });
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
