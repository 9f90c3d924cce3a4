// CUDA fused soft-cap + cross-entropy. Two kernels:
//  - the register kernel (bf16 or f32 logits, V % 8 == 0, V <= 8192, 0 < cap <= 40, aligned rows: every
//    training preset): 32 WPR threads own a row (WPR = 1 .. 8 warps, whichever covers V with four
//    8-logit chunks per thread), read it once with 16-byte loads and keep, per logit, the two values the
//    gradient needs, q = 1 / (exp(2 z / cap) + 1) and p = exp(c - cap) = exp(-2 cap q), in registers
//    between the row sum and the write: 3 MUFU operations and one read per logit, where re-reading the
//    row and recomputing tanh and exp took 6 and bounded the old kernel by the SFU, not by memory.
//    Blocks walk rows with a grid stride and prefetch their next row's logits before working on the
//    current one, so loads stay in flight while the SFUs work.
//  - the general kernel (any V, any cap, misaligned views): one block per row; pass 1 streams the row
//    once keeping a per-thread online (max, sum-exp) of the capped logits (or a fixed shift when the cap
//    allows), merged across the block; pass 2 re-reads the row (L1/L2 hits) and writes the gradient or
//    the log-probabilities.
// Each element is read and written by the same thread, after every load of its row (the register
// kernel) or after pass 1's closing barrier (the general one), so in-place use is safe.
#include <algorithm>
#include <type_traits>

#include "ops/cross_entropy.h"
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

// tanh through one fast exp: absolute error ~1e-7 (an ulp of 1), i.e. ~3e-6 on a logit capped at 30,
// far below bf16 logit noise; tanhf costs several times more and this kernel is compute bound.
__device__ __forceinline__ float tanh_fast(float u) {
  const float t = 1.f - __fdividef(2.f, __expf(2.f * fabsf(u)) + 1.f);
  return copysignf(t, u);
}

// With a cap <= this, exp(c - cap) >= exp(-2 cap) stays a normal float, so the row sum needs no
// running max: one exp per element instead of a compare-and-rescale.
constexpr float kFixedShiftMaxCap = 40.f;

struct Cap {
  float cap, inv_cap;
  // Capped logit c(z) and dc/dz.
  __device__ __forceinline__ float value(float z) const { return cap > 0.f ? cap * tanh_fast(z * inv_cap) : z; }
  __device__ __forceinline__ float value_grad(float z, float* dcdz) const {
    if (cap > 0.f) {
      const float t = tanh_fast(z * inv_cap);
      *dcdz = 1.f - t * t;
      return cap * t;
    }
    *dcdz = 1.f;
    return z;
  }
};

__device__ __forceinline__ void online_add(float c, float& m, float& s) {
  if (c > m) {
    s = s * expf(m - c) + 1.f;
    m = c;
  } else {
    s += expf(c - m);
  }
}

// Log-sum-exp of the capped row, returned to every thread.
__device__ float row_lse(DevPtr z, int64_t base, int64_t V, Cap cap, bool vec, float* shared) {
  if (cap.cap > 0.f && cap.cap <= kFixedShiftMaxCap) {
    float s = 0.f;
    if (vec) {
      for (int64_t j = threadIdx.x * 8; j < V; j += kThreads * 8) {
        float e[8];
        load8(z, base + j, e);
#pragma unroll
        for (int k = 0; k < 8; ++k) s += __expf(cap.value(e[k]) - cap.cap);
      }
    } else {
      for (int64_t j = threadIdx.x; j < V; j += kThreads) s += __expf(cap.value(load1(z, base + j)) - cap.cap);
    }
    return cap.cap + logf(block_sum(s, shared));
  }
  float m = -INFINITY, s = 0.f;
  if (vec) {
    for (int64_t j = threadIdx.x * 8; j < V; j += kThreads * 8) {
      float e[8];
      load8(z, base + j, e);
#pragma unroll
      for (int k = 0; k < 8; ++k) online_add(cap.value(e[k]), m, s);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += kThreads) online_add(cap.value(load1(z, base + j)), m, s);
  }
  const float M = block_max(m, shared);
  const float scaled = (m == -INFINITY) ? 0.f : s * expf(m - M);
  const float S = block_sum(scaled, shared);
  return M + logf(S);
}

// targets == nullptr: log-softmax mode (out = c - lse, f32). Otherwise cross-entropy: losses[n],
// and out = dlogits when out.p != nullptr.
__global__ void softcap_ce_kernel(DevPtr logits, const int32_t* __restrict__ targets, Cap cap,
                                  float* __restrict__ losses, DevPtr out, float grad_scale, int64_t V, bool vec) {
  __shared__ float shared[32];
  __shared__ float target_c;
  const int64_t n = blockIdx.x;
  const int64_t base = n * V;
  int32_t t = -1;
  if (targets) {
    t = targets[n];
    // Read before any in-place write of pass 2.
    if (threadIdx.x == 0 && t >= 0 && t < V) target_c = cap.value(load1(logits, base + t));
  }
  const float lse = row_lse(logits, base, V, cap, vec, shared);  // ends with a barrier
  if (targets && threadIdx.x == 0) {
    if (t < 0) losses[n] = 0.f;
    else if (t >= V) losses[n] = __int_as_float(0x7fc00000);  // out of range: loud NaN
    else losses[n] = lse - target_c;
  }
  if (!out.p) return;
  const bool ignore = targets && t < 0;
  if (vec) {
    for (int64_t j = threadIdx.x * 8; j < V; j += kThreads * 8) {
      float e[8];
      load8(logits, base + j, e);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        float dcdz;
        const float c = cap.value_grad(e[k], &dcdz);
        if (!targets) e[k] = c - lse;
        else if (ignore) e[k] = 0.f;
        else e[k] = grad_scale * (__expf(c - lse) - (j + k == t ? 1.f : 0.f)) * dcdz;
      }
      store8(out, base + j, e);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += kThreads) {
      float dcdz;
      const float c = cap.value_grad(load1(logits, base + j), &dcdz);
      float r;
      if (!targets) r = c - lse;
      else if (ignore) r = 0.f;
      else r = grad_scale * (__expf(c - lse) - (j == t ? 1.f : 0.f)) * dcdz;
      store1(out, base + j, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The register kernel.

constexpr int kChunks = 4;          // 8-logit chunks per thread
constexpr int kRegMaxV = 8 * 32 * 8 * kChunks;  // 8192: eight warps per row

__device__ __forceinline__ float ex2(float x) {  // 2^x, the SFU's approximation (as __expf uses)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp(float x) {  // 1 / x, the SFU's approximation; 0 for x = inf
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 8 logits as loaded: one 16-byte word (bf16) or two (f32).
template <class T>
struct Chunk {
  uint4 w[sizeof(T) / 2];
};

template <class T>
__device__ __forceinline__ void load_chunk(const T* p, Chunk<T>& c) {
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(T) / 2); ++i) c.w[i] = reinterpret_cast<const uint4*>(p)[i];
}

template <class T>
__device__ __forceinline__ void unpack(const Chunk<T>& c, float e[8]) {
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      e[4 * i] = __uint_as_float(c.w[i].x), e[4 * i + 1] = __uint_as_float(c.w[i].y);
      e[4 * i + 2] = __uint_as_float(c.w[i].z), e[4 * i + 3] = __uint_as_float(c.w[i].w);
    }
  } else {
    const uint32_t u[4] = {c.w[0].x, c.w[0].y, c.w[0].z, c.w[0].w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      e[2 * i] = __uint_as_float(u[i] << 16);
      e[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
  }
}

template <class T>
__device__ __forceinline__ float load_one(const T* p) {
  if constexpr (sizeof(T) == 4) return *reinterpret_cast<const float*>(p);
  else return bf16_bits_to_f32(*reinterpret_cast<const uint16_t*>(p));
}

// One row's chunks for the thread at position tr of the row's 32 WPR threads: chunk k holds logits
// 8 (k 32 WPR + tr) .. + 7 (consecutive threads read consecutive 16-byte words).
template <class T, int WPR>
__device__ __forceinline__ void load_row(const T* logits, int64_t row, int V, int tr, Chunk<T> c[kChunks]) {
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j0 = 8 * (k * 32 * WPR + tr);
    if (j0 < V) load_chunk(logits + row * V + j0, c[k]);
  }
}

// Rows of V logits, 8 / WPR of them per block of 256 threads, blocks striding over row groups. With
// u = z / cap and q = 1 / (e^{2u} + 1): tanh(u) = 1 - 2 q, so the capped logit c = cap - 2 cap q,
// exp(c - cap) = exp(-2 cap q) (in [e^{-2 cap}, 1]: no running max for cap <= 40), dc/dz = 1 - tanh^2
// = 4 q (1 - q), and with S = sum exp(c - cap): lse = cap + log S, softmax = exp(c - cap) / S,
// loss = lse - c[target] = log S + 2 cap q[target]. targets == nullptr: log-softmax mode, out = c - lse
// = -log S - 2 cap q.
template <class T, int WPR>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 2 ? 2 : 1)
    softcap_ce_reg_kernel(const T* logits, const int32_t* __restrict__ targets, float cap,
                          float* __restrict__ losses, DevPtr out, float grad_scale, int64_t N, int V) {
  constexpr int kRowsPerBlock = 8 / WPR;
  __shared__ float partial[2][8];  // per-warp row sums, double-buffered by iteration parity
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot = warp / WPR, tr = (warp % WPR) * 32 + lane;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  const float log2e = 1.4426950408889634f;
  const float k_e2u = 2.f * log2e / cap;   // e^{2u} = 2^(z k_e2u)
  const float k_p = -2.f * cap * log2e;    // exp(-2 cap q) = 2^(q k_p)
  Chunk<T> cur[kChunks];
  int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + slot;
  if (row < N) load_row<T, WPR>(logits, row, V, tr, cur);
  // The trip count is the block's (row groups), so every warp reaches the barriers; rows past N idle.
  int parity = 0;
  for (int64_t group = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; group < N;
       group += stride, row += stride, parity ^= 1) {
    const bool live = row < N;
    const int32_t t = targets && live ? targets[row] : -1;
    // The thread whose chunk holds the target reads its logit once more (an L1/L2 hit, before it writes
    // the row) for the loss; picking it out of the registers would index them dynamically.
    const bool owner = t >= 0 && t < V && (t >> 3) % (32 * WPR) == tr;
    float zt = 0.f;
    if (owner) zt = load_one(logits + row * V + t);
    Chunk<T> nxt[kChunks];
    if (row + stride < N) load_row<T, WPR>(logits, row + stride, V, tr, nxt);
    float q[kChunks][8], p[kChunks][8], s = 0.f;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int j0 = 8 * (k * 32 * WPR + tr);
      if (!live || j0 >= V) continue;
      float e[8];
      unpack(cur[k], e);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        q[k][j] = rcp(ex2(e[j] * k_e2u) + 1.f);
        p[k][j] = ex2(q[k][j] * k_p);
        s += p[k][j];
      }
    }
    s = warp_sum(s);
    if constexpr (WPR > 1) {
      if (lane == 0) partial[parity][warp] = s;
      __syncthreads();  // partial[parity] is rewritten two iterations on, after the next barrier
      s = 0.f;
#pragma unroll
      for (int w = 0; w < WPR; ++w) s += partial[parity][slot * WPR + w];
    }
#pragma unroll
    for (int k = 0; k < kChunks; ++k) cur[k] = nxt[k];
    if (!live) continue;
    const float log_s = logf(s), inv_s = 1.f / s;
    if (targets && tr == 0) {
      if (t < 0) losses[row] = 0.f;
      else if (t >= V) losses[row] = __int_as_float(0x7fc00000);  // out of range: loud NaN
    }
    const bool ignore = targets && t < 0;
    const float g4 = 4.f * grad_scale;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int j0 = 8 * (k * 32 * WPR + tr);
      if (j0 >= V) continue;
      const bool has_t = t >= 0 && j0 == (t & ~7);  // this chunk holds the target
      float v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float pr = p[k][j] * inv_s;
        if (has_t && j == (t & 7)) pr -= 1.f;
        if (!targets) v[j] = fmaf(-2.f * cap, q[k][j], -log_s);
        else if (ignore) v[j] = 0.f;
        else v[j] = g4 * pr * fmaf(-q[k][j], q[k][j], q[k][j]);
      }
      if (out.p) store8(out, row * V + j0, v);
    }
    if (owner) losses[row] = log_s + 2.f * cap * rcp(ex2(zt * k_e2u) + 1.f);  // the q of the row's pass
  }
}

// Warps per row for the register kernel, 0 when it does not apply.
int reg_warps(int64_t V, float cap, std::initializer_list<const void*> ptrs) {
  if (!(cap > 0.f && cap <= kFixedShiftMaxCap) || V % 8 != 0 || V > kRegMaxV) return 0;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return 0;
  int w = 1;
  while (32 * 8 * kChunks * w < V) w *= 2;
  return w;
}

// A grid of resident blocks (all the device holds at once: they stride over the rows and prefetch),
// or fewer when there are fewer row groups. Queried once per kernel (one device per process).
template <class T, int WPR>
void launch_reg(const T* logits, const int32_t* targets, float cap, float* losses, DevPtr out, float grad_scale,
                int64_t N, int64_t V) {
  static const int64_t resident = [] {
    int dev = 0, sms = 0, per_sm = 0;
    PG_CUDA_CHECK(cudaGetDevice(&dev), "softcap_cross_entropy: device");
    PG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "softcap_cross_entropy: SMs");
    PG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, softcap_ce_reg_kernel<T, WPR>, kThreads, 0),
                  "softcap_cross_entropy: occupancy");
    return static_cast<int64_t>(sms) * std::max(per_sm, 1);
  }();
  const int64_t groups = (N + 8 / WPR - 1) / (8 / WPR);
  const auto grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(groups, resident)));
  softcap_ce_reg_kernel<T, WPR><<<grid, kThreads, 0, stream()>>>(logits, targets, cap, losses, out, grad_scale, N,
                                                                 static_cast<int>(V));
}

// Runs the register kernel when it applies; false otherwise.
bool try_reg(const Tensor& logits, const int32_t* targets, float cap, float* losses, DevPtr out, float grad_scale) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  if (logits.dtype() != DType::BF16 && logits.dtype() != DType::F32) return false;
  const int w = reg_warps(V, cap, {logits.data(), out.p});
  if (w == 0) return false;
  auto go = [&](auto* lp) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(lp)>>;
    switch (w) {
      case 1: launch_reg<T, 1>(lp, targets, cap, losses, out, grad_scale, N, V); break;
      case 2: launch_reg<T, 2>(lp, targets, cap, losses, out, grad_scale, N, V); break;
      case 4: launch_reg<T, 4>(lp, targets, cap, losses, out, grad_scale, N, V); break;
      default: launch_reg<T, 8>(lp, targets, cap, losses, out, grad_scale, N, V); break;
    }
  };
  if (logits.dtype() == DType::BF16) go(static_cast<const bf16*>(logits.data()));
  else go(static_cast<const float*>(logits.data()));
  return true;
}

Cap make_cap(const char* op, float cap) {
  PG_CHECK(cap >= 0.f, "{}: cap {} must be >= 0", op, cap);
  return Cap{cap, cap > 0.f ? 1.f / cap : 0.f};
}

}  // namespace

void softcap_cross_entropy(const Tensor& logits, const Tensor& targets, float cap, const Tensor& losses,
                           const Tensor& dlogits, float grad_scale) {
  const char* op = "softcap_cross_entropy";
  PG_CHECK(logits.ndim() == 2, "{}: logits is {}, expected (N, V)", op, logits.desc());
  const int64_t N = logits.dim(0), V = logits.dim(1);
  require_dtype(op, "targets", targets, DType::I32);
  require_dtype(op, "losses", losses, DType::F32);
  PG_CHECK(targets.numel() == N && losses.numel() == N, "{}: targets {} / losses {} need {} rows", op,
           targets.desc(), losses.desc(), N);
  const DevPtr lp = dev_ptr(op, "logits", logits);
  DevPtr dp{nullptr, Kind::F32};
  if (dlogits.defined()) {
    dp = dev_ptr(op, "dlogits", dlogits);
    PG_CHECK(dlogits.numel() == logits.numel(), "{}: dlogits {} does not match logits {}", op, dlogits.desc(),
             logits.desc());
  }
  if (N == 0) return;
  PG_CHECK(V > 0 && N <= 0x7fffffff, "{}: unsupported logits shape {}", op, logits.desc());
  if (try_reg(logits, targets.ptr<int32_t>(), cap, losses.ptr<float>(), dp, grad_scale)) {
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const bool vec = V % 8 == 0 && aligned16(lp.p) && (!dp.p || aligned16(dp.p));
  softcap_ce_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(
      lp, targets.ptr<int32_t>(), make_cap(op, cap), losses.ptr<float>(), dp, grad_scale, V, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void softcap_log_softmax(const Tensor& logits, float cap, const Tensor& logprobs) {
  const char* op = "softcap_log_softmax";
  PG_CHECK(logits.ndim() == 2, "{}: logits is {}, expected (N, V)", op, logits.desc());
  const int64_t N = logits.dim(0), V = logits.dim(1);
  require_dtype(op, "logprobs", logprobs, DType::F32);
  PG_CHECK(logprobs.numel() == logits.numel(), "{}: logprobs {} does not match logits {}", op, logprobs.desc(),
           logits.desc());
  const DevPtr lp = dev_ptr(op, "logits", logits), op_ = dev_ptr(op, "logprobs", logprobs);
  if (N == 0) return;
  PG_CHECK(V > 0 && N <= 0x7fffffff, "{}: unsupported logits shape {}", op, logits.desc());
  if (try_reg(logits, nullptr, cap, nullptr, op_, 0.f)) {
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const bool vec = V % 8 == 0 && aligned16(lp.p) && aligned16(op_.p);
  softcap_ce_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(lp, nullptr, make_cap(op, cap), nullptr,
                                                                         op_, 0.f, V, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
