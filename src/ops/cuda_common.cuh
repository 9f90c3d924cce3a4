#pragma once
// Device helpers shared by the op kernels: the launch stream, type-erased f32/bf16/f16 element
// access (scalar and 8-wide 16-byte vectors), warp/block reductions and grid sizing.
// Included only from .cu files.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace pgolf::ops::cuda::detail {

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// ---------------------------------------------------------------------------------------------
// Element kinds. Elementwise kernels are memory bound, so one kernel that branches (uniformly) on
// the element kind of each operand is as fast as a template per dtype combination and keeps the
// number of instantiations (and nvcc time) small.
enum class Kind : uint8_t { F32 = 0, BF16 = 1, F16 = 2 };

struct DevPtr {
  void* p;
  Kind k;
};

inline DevPtr dev_ptr(const char* op, const char* arg, const Tensor& t) {
  PG_CHECK(t.is_cuda(), "{}: {} is {}, expected a cuda tensor", op, arg, t.desc());
  switch (t.dtype()) {
    case DType::F32: return DevPtr{t.data(), Kind::F32};
    case DType::BF16: return DevPtr{t.data(), Kind::BF16};
    case DType::F16: return DevPtr{t.data(), Kind::F16};
    default: PG_FAIL("{}: {} is {}, the cuda kernel supports f32/bf16/f16 only", op, arg, t.desc());
  }
}

inline void require_dtype(const char* op, const char* arg, const Tensor& t, DType want) {
  PG_CHECK(t.dtype() == want, "{}: {} is {}, the cuda kernel needs {}", op, arg, t.desc(), dtype_name(want));
  PG_CHECK(t.is_cuda(), "{}: {} is {}, expected a cuda tensor", op, arg, t.desc());
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---------------------------------------------------------------------------------------------
// Scalar conversions. bf16 rounding is round-to-nearest-even like the host's f32_to_bf16.
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float load1(DevPtr p, int64_t i) {
  switch (p.k) {
    case Kind::F32: return static_cast<const float*>(p.p)[i];
    case Kind::BF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(p.p)[i]);
    default: return __half2float(static_cast<const __half*>(p.p)[i]);
  }
}

__device__ __forceinline__ void store1(DevPtr p, int64_t i, float v) {
  switch (p.k) {
    case Kind::F32: static_cast<float*>(p.p)[i] = v; break;
    case Kind::BF16: static_cast<uint16_t*>(p.p)[i] = f32_to_bf16_bits(v); break;
    default: static_cast<__half*>(p.p)[i] = __float2half_rn(v); break;
  }
}

// 8 consecutive elements starting at i (i % 8 == 0, base 16-byte aligned): one 16-byte load for
// 2-byte kinds, two for f32.
__device__ __forceinline__ void load8(DevPtr p, int64_t i, float v[8]) {
  if (p.k == Kind::F32) {
    const float4* q = reinterpret_cast<const float4*>(static_cast<const float*>(p.p) + i);
    float4 a = q[0], b = q[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
    uint4 u = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(p.p) + i);
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
    if (p.k == Kind::BF16) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[2 * j] = __uint_as_float(w[j] << 16);
        v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        __half2 h = *reinterpret_cast<__half2*>(&w[j]);
        float2 f = __half22float2(h);
        v[2 * j] = f.x;
        v[2 * j + 1] = f.y;
      }
    }
  }
}

__device__ __forceinline__ void store8(DevPtr p, int64_t i, const float v[8]) {
  if (p.k == Kind::F32) {
    float4* q = reinterpret_cast<float4*>(static_cast<float*>(p.p) + i);
    q[0] = make_float4(v[0], v[1], v[2], v[3]);
    q[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t w[4];
    if (p.k == Kind::BF16) {
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = pack_bf16x2(v[2 * j], v[2 * j + 1]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        __half2 h = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
        w[j] = *reinterpret_cast<uint32_t*>(&h);
      }
    }
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.p) + i) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// ---------------------------------------------------------------------------------------------
// Typed access for the row kernels that are templated on their activation type (float or bf16).
template <class T> __device__ __forceinline__ float to_f32(T x);
template <> __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f32<bf16>(bf16 x) { return bf16_bits_to_f32(x.bits); }
template <class T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return bf16{f32_to_bf16_bits(x)}; }

// 8 typed elements (16-byte aligned for bf16, 32 bytes read as two float4 for f32).
template <class T> __device__ __forceinline__ void load8t(const T* p, float v[8]) {
  load8(DevPtr{const_cast<T*>(p), sizeof(T) == 4 ? Kind::F32 : Kind::BF16}, 0, v);
}
template <class T> __device__ __forceinline__ void store8t(T* p, const float v[8]) {
  store8(DevPtr{p, sizeof(T) == 4 ? Kind::F32 : Kind::BF16}, 0, v);
}

// ---------------------------------------------------------------------------------------------
// Reductions.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block, returned to every thread. `shared` holds >= 32 floats; blockDim.x % 32 == 0.
// Ends with a barrier so `shared` may be reused right after.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? shared[lane] : 0.f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? shared[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

// ---------------------------------------------------------------------------------------------
// Grid sizing for grid-stride loops: enough blocks to fill an H100 a few times over, never more
// than there is work for.
inline unsigned grid_for(int64_t work_items, int threads, int64_t max_blocks = 8192) {
  int64_t b = (work_items + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

}  // namespace pgolf::ops::cuda::detail
