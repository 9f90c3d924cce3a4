// CUDA fused soft-cap + cross-entropy. One block per row: pass 1 streams the row once keeping a
// per-thread online (max, sum-exp) of the capped logits, merged across the block; pass 2 re-reads
// the row (L1/L2 hits) and writes the gradient or the log-probabilities. Each element of pass 2 is
// read and written by the same thread and pass 1 ends at a barrier, so in-place use is safe.
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
  const bool vec = V % 8 == 0 && aligned16(lp.p) && aligned16(op_.p);
  softcap_ce_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(lp, nullptr, make_cap(op, cap), nullptr,
                                                                         op_, 0.f, V, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
