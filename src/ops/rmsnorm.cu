// CUDA RMSNorm: one warp per row (rows are short: C ~ 512), fp32 statistics, 16-byte vectors when
// C % 8 == 0. The second pass over a row re-reads it from L1/L2, which keeps y == x aliasing safe.
#include "ops/cuda_colsum.cuh"
#include "ops/cuda_common.cuh"
#include "ops/rmsnorm.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kRowsPerBlock = 8;

__global__ void rmsnorm_forward_kernel(DevPtr x, const float* __restrict__ gain, DevPtr y, float* __restrict__ rstd,
                                       int64_t N, int64_t C, float eps, bool vec) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const int64_t base = n * C;
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
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 256) {
      float e[8];
      load8(x, base + c, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) e[j] *= r * (gain ? gain[c + j] : 1.f);
      store8(y, base + c, e);
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) store1(y, base + c, load1(x, base + c) * r * (gain ? gain[c] : 1.f));
  }
  if (lane == 0) rstd[n] = r;
}

// dx = r u - r^3 x mean(u x), u = dy * gain.
__global__ void rmsnorm_backward_kernel(DevPtr x, const float* __restrict__ gain, const float* __restrict__ rstd,
                                        DevPtr dy, DevPtr dx, int64_t N, int64_t C, bool vec,
                                        bool from_output = false, bool accumulate = false) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const int64_t base = n * C;
  float dot = 0.f;
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 256) {
      float xe[8], de[8];
      load8(x, base + c, xe);
      load8(dy, base + c, de);
#pragma unroll
      for (int j = 0; j < 8; ++j) dot += de[j] * (gain ? gain[c + j] : 1.f) * xe[j];
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) dot += load1(dy, base + c) * (gain ? gain[c] : 1.f) * load1(x, base + c);
  }
  dot = warp_sum(dot);
  const float r = rstd[n];
  // From the output (x holds y = x r): r^3 x dot(x) = r y dot(y).
  const float k = (from_output ? r : r * r * r) * dot / static_cast<float>(C);
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 256) {
      float xe[8], de[8];
      load8(x, base + c, xe);
      load8(dy, base + c, de);
#pragma unroll
      for (int j = 0; j < 8; ++j) de[j] = r * de[j] * (gain ? gain[c + j] : 1.f) - k * xe[j];
      if (accumulate) {
        float old[8];
        load8(dx, base + c, old);
#pragma unroll
        for (int j = 0; j < 8; ++j) de[j] += old[j];
      }
      store8(dx, base + c, de);
    }
  } else {
    for (int64_t c = lane; c < C; c += 32)
      store1(dx, base + c, (accumulate ? load1(dx, base + c) : 0.f) + r * load1(dy, base + c) * (gain ? gain[c] : 1.f) -
                               k * load1(x, base + c));
  }
}

// dgain[c] += sum_n dy[n, c] x[n, c] rstd[n].
struct GainGradTerm {
  DevPtr x, dy;
  const float* rstd;
  __device__ float operator()(int64_t n, int64_t, int64_t i) const { return load1(dy, i) * load1(x, i) * rstd[n]; }
};

bool rows_vectorisable(int64_t C, std::initializer_list<DevPtr> ps) {
  if (C % 8 != 0) return false;
  for (const DevPtr& p : ps)
    if (!aligned16(p.p)) return false;
  return true;
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& gain, const Tensor& y, const Tensor& rstd, float eps) {
  const char* op = "rmsnorm_forward";
  PG_CHECK(x.ndim() >= 1, "{}: x is {}", op, x.desc());
  const int64_t C = x.dim(-1), N = C > 0 ? x.numel() / C : 0;
  require_dtype(op, "rstd", rstd, DType::F32);
  PG_CHECK(rstd.numel() == N && y.numel() == x.numel(), "{}: rstd {} / y {} do not match x {}", op, rstd.desc(),
           y.desc(), x.desc());
  if (gain.defined()) {
    require_dtype(op, "gain", gain, DType::F32);
    PG_CHECK(gain.numel() == C, "{}: gain {} does not match {} channels", op, gain.desc(), C);
  }
  if (N == 0) return;
  const DevPtr xp = dev_ptr(op, "x", x), yp = dev_ptr(op, "y", y);
  const bool vec = rows_vectorisable(C, {xp, yp});
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  rmsnorm_forward_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(
      xp, gain.defined() ? gain.ptr<float>() : nullptr, yp, rstd.ptr<float>(), N, C, eps, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void rmsnorm_backward(const Tensor& x, const Tensor& gain, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dgain) {
  const char* op = "rmsnorm_backward";
  const int64_t C = x.dim(-1), N = C > 0 ? x.numel() / C : 0;
  require_dtype(op, "rstd", rstd, DType::F32);
  PG_CHECK(rstd.numel() == N && dy.numel() == x.numel() && dx.numel() == x.numel(),
           "{}: rstd {} / dy {} / dx {} do not match x {}", op, rstd.desc(), dy.desc(), dx.desc(), x.desc());
  const float* g = nullptr;
  if (gain.defined()) {
    require_dtype(op, "gain", gain, DType::F32);
    PG_CHECK(gain.numel() == C, "{}: gain {} does not match {} channels", op, gain.desc(), C);
    g = gain.ptr<float>();
  }
  if (N == 0) return;
  const DevPtr xp = dev_ptr(op, "x", x), dyp = dev_ptr(op, "dy", dy), dxp = dev_ptr(op, "dx", dx);
  // The gain gradient reads dy, so it runs before dx (which may alias dy) is written.
  if (gain.defined() && dgain.defined()) {
    require_dtype(op, "dgain", dgain, DType::F32);
    PG_CHECK(dgain.numel() == C, "{}: dgain {} does not match {} channels", op, dgain.desc(), C);
    launch_column_reduce(N, C, GainGradTerm{xp, dyp, rstd.ptr<float>()}, dgain.ptr<float>(), op);
  }
  const bool vec = rows_vectorisable(C, {xp, dyp, dxp});
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  rmsnorm_backward_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(xp, g, rstd.ptr<float>(), dyp, dxp, N, C, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void rmsnorm_backward_from_output(const Tensor& y, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                                  bool accumulate) {
  const char* op = "rmsnorm_backward_from_output";
  const int64_t C = y.dim(-1), N = C > 0 ? y.numel() / C : 0;
  require_dtype(op, "rstd", rstd, DType::F32);
  PG_CHECK(rstd.numel() == N && dy.numel() == y.numel() && dx.numel() == y.numel(),
           "{}: rstd {} / dy {} / dx {} do not match y {}", op, rstd.desc(), dy.desc(), dx.desc(), y.desc());
  if (N == 0) return;
  const DevPtr yp = dev_ptr(op, "y", y), dyp = dev_ptr(op, "dy", dy), dxp = dev_ptr(op, "dx", dx);
  const bool vec = rows_vectorisable(C, {yp, dyp, dxp});
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  rmsnorm_backward_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(yp, nullptr, rstd.ptr<float>(), dyp, dxp, N, C,
                                                                     vec, true, accumulate);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
