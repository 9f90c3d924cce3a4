// CUDA optimizer kernels. Hyperparameters come from the device tensor `hp` (read by every thread;
// a broadcast load) so a captured graph sees new values without re-capture.
#include "ops/cuda_common.cuh"
#include "ops/optim.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

enum class Opt : int { Adam, Momentum, MomentumNesterov, MuonApply, Ema };

// Four f32 state operands (meaning per kind) plus one f32|bf16 operand `w`.
struct OptArgs {
  float* a;  // Adam: p ; Momentum: g ; MuonApply: p ; Ema: avg
  float* b;  // Adam: g ; Momentum: buf ; Ema: p
  float* c;  // Adam: m
  float* d;  // Adam: v
  DevPtr w;  // Momentum: u (out) ; MuonApply: x (in)
  const float* hp;
  int64_t n;
};

template <Opt kind> __device__ __forceinline__ void opt_elem(const OptArgs& q, int64_t i, const float* h) {
  if constexpr (kind == Opt::Adam) {
    const float lr = h[0], b1 = h[1], b2 = h[2], eps = h[3], wd = h[4], bc1 = h[5], bc2 = h[6], gs = h[7];
    const float g = q.b[i] * gs;
    const float m = b1 * q.c[i] + (1.f - b1) * g;
    const float v = b2 * q.d[i] + (1.f - b2) * g * g;
    q.c[i] = m;
    q.d[i] = v;
    q.a[i] = q.a[i] * (1.f - lr * wd) - lr * (m / bc1) / (sqrtf(v / bc2) + eps);
  } else if constexpr (kind == Opt::Momentum || kind == Opt::MomentumNesterov) {
    const float mu = h[0], g = q.a[i] * h[1];
    const float buf = mu * q.b[i] + g;
    q.b[i] = buf;
    store1(q.w, i, kind == Opt::MomentumNesterov ? g + mu * buf : buf);
  } else if constexpr (kind == Opt::MuonApply) {
    const float lr = h[0], wd = h[1], ss = h[2];
    q.a[i] = q.a[i] * (1.f - lr * wd) - lr * ss * load1(q.w, i);
  } else {  // Ema
    const float decay = h[0];
    q.a[i] = decay * q.a[i] + (1.f - decay) * q.b[i];
  }
}

template <Opt kind> __global__ void opt_kernel(OptArgs q) {
  float h[8];
  constexpr int kHp = kind == Opt::Adam ? 8 : kind == Opt::MuonApply ? 3 : kind == Opt::Ema ? 1 : 2;
#pragma unroll
  for (int k = 0; k < kHp; ++k) h[k] = q.hp[k];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < q.n; i += stride)
    opt_elem<kind>(q, i, h);
}

template <Opt kind> void launch_opt(const char* op, const OptArgs& q) {
  if (q.n == 0) return;
  opt_kernel<kind><<<grid_for(q.n, kThreads, 4096), kThreads, 0, stream()>>>(q);
  PG_CUDA_LAUNCH_CHECK(op);
}

float* f32(const char* op, const char* arg, const Tensor& t, int64_t n) {
  require_dtype(op, arg, t, DType::F32);
  PG_CHECK(t.numel() == n, "{}: {} is {}, expected {} elements", op, arg, t.desc(), n);
  return t.ptr<float>();
}

const float* hyper(const char* op, const Tensor& hp, int64_t need) {
  require_dtype(op, "hp", hp, DType::F32);
  PG_CHECK(hp.numel() >= need, "{}: hp is {}, expected {} values", op, hp.desc(), need);
  return hp.ptr<float>();
}

// One warp per row: x_r /= max(||x_r||, eps).
__global__ void row_normalize_kernel(DevPtr x, int64_t R, int64_t C, float eps, bool vec) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= R) return;
  const int64_t base = r * C;
  float ss = 0.f;
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 256) {
      float e[8];
      load8(x, base + c, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += e[j] * e[j];
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) {
      const float v = load1(x, base + c);
      ss += v * v;
    }
  }
  const float inv = 1.f / fmaxf(sqrtf(warp_sum(ss)), eps);
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 256) {
      float e[8];
      load8(x, base + c, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) e[j] *= inv;
      store8(x, base + c, e);
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) store1(x, base + c, load1(x, base + c) * inv);
  }
}

// One block of 1024 threads per row, for few long rows: Newton–Schulz normalizes each matrix of a stack
// as one row (e.g. 11 rows of 512 x 2048), where a warp per row left most of the GPU idle and each warp
// streamed megabytes one 512-byte load at a time (~3 ms for the stack). Each thread keeps four 16-byte
// loads in flight per pass; the block sum has a fixed order, so the result is reproducible.
constexpr int kLongThreads = 1024, kLongUnroll = 4;
constexpr int64_t kLongRow = 16384;  // rows at least this long take the block kernel

__global__ void __launch_bounds__(kLongThreads) row_normalize_long_kernel(DevPtr x, int64_t C, float eps, bool vec) {
  __shared__ float shared[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * C;
  constexpr int64_t kSpan = int64_t{kLongThreads} * 8;  // elements per chunk of the block
  float ss = 0.f;
  if (vec) {
    for (int64_t c0 = threadIdx.x * 8; c0 < C; c0 += kLongUnroll * kSpan) {
      float e[kLongUnroll][8];
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (c0 + u * kSpan < C) load8(x, base + c0 + u * kSpan, e[u]);
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (c0 + u * kSpan < C) {
#pragma unroll
          for (int j = 0; j < 8; ++j) ss += e[u][j] * e[u][j];
        }
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += kLongThreads) {
      const float v = load1(x, base + c);
      ss += v * v;
    }
  }
  const float inv = 1.f / fmaxf(sqrtf(block_sum(ss, shared)), eps);
  if (vec) {
    for (int64_t c0 = threadIdx.x * 8; c0 < C; c0 += kLongUnroll * kSpan) {
      float e[kLongUnroll][8];
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (c0 + u * kSpan < C) load8(x, base + c0 + u * kSpan, e[u]);
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (c0 + u * kSpan < C) {
#pragma unroll
          for (int j = 0; j < 8; ++j) e[u][j] *= inv;
          store8(x, base + c0 + u * kSpan, e[u]);
        }
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += kLongThreads) store1(x, base + c, load1(x, base + c) * inv);
  }
}

}  // namespace

void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& hp) {
  const char* op = "adam_step";
  const int64_t n = p.numel();
  OptArgs q{f32(op, "p", p, n), f32(op, "g", g, n), f32(op, "m", m, n), f32(op, "v", v, n), DevPtr{},
            hyper(op, hp, 8), n};
  launch_opt<Opt::Adam>(op, q);
}

void muon_momentum(const Tensor& g, const Tensor& buf, const Tensor& u, const Tensor& hp, bool nesterov) {
  const char* op = "muon_momentum";
  const int64_t n = g.numel();
  PG_CHECK(u.numel() == n, "{}: u {} does not match g {}", op, u.desc(), g.desc());
  OptArgs q{f32(op, "g", g, n), f32(op, "buf", buf, n), nullptr, nullptr, dev_ptr(op, "u", u), hyper(op, hp, 2), n};
  if (nesterov) launch_opt<Opt::MomentumNesterov>(op, q);
  else launch_opt<Opt::Momentum>(op, q);
}

void row_normalize(const Tensor& x, float eps) {
  const char* op = "row_normalize";
  PG_CHECK(x.ndim() == 2, "{}: x is {}, expected (R, C)", op, x.desc());
  const int64_t R = x.dim(0), C = x.dim(1);
  if (R == 0 || C == 0) return;
  const DevPtr xp = dev_ptr(op, "x", x);
  const bool vec = C % 8 == 0 && aligned16(xp.p);
  if (C >= kLongRow) {
    PG_CHECK(R <= 0x7fffffff, "{}: {} rows is too many", op, R);
    row_normalize_long_kernel<<<static_cast<unsigned>(R), kLongThreads, 0, stream()>>>(xp, C, eps, vec);
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  constexpr int kRowsPerBlock = 8;
  row_normalize_kernel<<<static_cast<unsigned>((R + kRowsPerBlock - 1) / kRowsPerBlock), kRowsPerBlock * 32, 0,
                         stream()>>>(xp, R, C, eps, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void muon_apply(const Tensor& p, const Tensor& x, const Tensor& hp) {
  const char* op = "muon_apply";
  const int64_t n = p.numel();
  PG_CHECK(x.numel() == n, "{}: x {} does not match p {}", op, x.desc(), p.desc());
  OptArgs q{f32(op, "p", p, n), nullptr, nullptr, nullptr, dev_ptr(op, "x", x), hyper(op, hp, 3), n};
  launch_opt<Opt::MuonApply>(op, q);
}

void ema_update(const Tensor& avg, const Tensor& p, const Tensor& hp) {
  const char* op = "ema_update";
  const int64_t n = avg.numel();
  OptArgs q{f32(op, "avg", avg, n), f32(op, "p", p, n), nullptr, nullptr, DevPtr{}, hyper(op, hp, 1), n};
  launch_opt<Opt::Ema>(op, q);
}

namespace {

// One block: each pass stages a chunk of the parts (in `order`) in shared memory and thread 0 adds it in order in
// double, so the rounding is the CPU's bit for bit; then every thread writes the scale to its share of the slots.
// A few hundred values: microseconds, and nothing for the host to wait on.
__global__ void clip_grad_scale_kernel(const float* __restrict__ parts, const int32_t* __restrict__ order, int64_t n,
                                       double max_norm, float* __restrict__ hp, const int32_t* __restrict__ slots,
                                       int64_t n_slots, float* __restrict__ norm_out) {
  __shared__ double chunk[kThreads];
  __shared__ float scale;
  double acc = 0;  // thread 0's running sum
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t j = base + threadIdx.x;
    if (j < n) chunk[threadIdx.x] = static_cast<double>(parts[order[j]]);
    __syncthreads();
    if (threadIdx.x == 0) {
      const int64_t m = n - base < blockDim.x ? n - base : blockDim.x;
      for (int64_t k = 0; k < m; ++k) acc += chunk[k];
    }
    __syncthreads();  // the chunk is read before the next pass overwrites it
  }
  if (threadIdx.x == 0) {
    const double norm = sqrt(acc);
    const double q = max_norm / (norm + 1e-6);
    scale = static_cast<float>(q < 1.0 ? q : 1.0);  // std::min(1.0, q) of the CPU: a NaN norm gives 1
    norm_out[0] = static_cast<float>(norm);
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < n_slots; k += blockDim.x) hp[slots[k]] = scale;
}

const int32_t* i32(const char* op, const char* arg, const Tensor& t) {
  require_dtype(op, arg, t, DType::I32);
  return t.ptr<int32_t>();
}

}  // namespace

void clip_grad_scale(const Tensor& parts, const Tensor& order, double max_norm, const Tensor& hp, const Tensor& slots,
                     const Tensor& norm_out) {
  const char* op = "clip_grad_scale";
  // Index ranges are the caller's contract (checked by the CPU op): reading them here would sync the host.
  clip_grad_scale_kernel<<<1, kThreads, 0, stream()>>>(f32(op, "parts", parts, parts.numel()), i32(op, "order", order),
                                                       order.numel(), max_norm, f32(op, "hp", hp, hp.numel()),
                                                       i32(op, "slots", slots), slots.numel(),
                                                       f32(op, "norm_out", norm_out, 1));
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
