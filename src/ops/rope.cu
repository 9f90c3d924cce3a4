// CUDA partial RoPE. The inverse frequencies base^(-2i/rot_dims) are computed once on the host in
// double and rounded to float (passed by value in the kernel parameters), so the GPU needs no pow
// and agrees with any host that rounds the same exact value; angle = float(pos) * inv_freq[i] in fp32.
#include <cmath>

#include "ops/cuda_common.cuh"
#include "ops/rope.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kMaxHalf = 256;  // rot_dims <= 512

struct InvFreq {
  float v[kMaxHalf];
};

// One thread per (row, d) of (B*T*H, D). Thread d < h owns the pair (d, d + h); threads at
// d >= rot_dims copy their element when y is a different buffer. sign = +1 forward, -1 backward.
__global__ void rope_kernel(DevPtr x, DevPtr y, int64_t rows, int64_t T, int64_t H, int64_t D, int half,
                            int64_t pos_offset, InvFreq inv, float sign, bool copy_rest) {
  const int64_t total = rows * D;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t d = idx % D;
    if (d < half) {
      const int64_t row = idx / D;
      const int64_t t = (row / H) % T;
      const float angle = static_cast<float>(pos_offset + t) * inv.v[d];
      float s, c;
      sincosf(angle, &s, &c);
      s *= sign;
      const float a = load1(x, idx), b = load1(x, idx + half);
      store1(y, idx, a * c - b * s);
      store1(y, idx + half, b * c + a * s);
    } else if (d >= 2 * half && copy_rest) {
      store1(y, idx, load1(x, idx));
    }
  }
}

void launch_rope(const char* op, const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset,
                 float sign) {
  PG_CHECK(x.ndim() == 4, "{}: input is {}, expected (B, T, H, D)", op, x.desc());
  PG_CHECK(y.numel() == x.numel(), "{}: output {} does not match input {}", op, y.desc(), x.desc());
  const int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  PG_CHECK(rot_dims >= 0 && rot_dims % 2 == 0 && rot_dims <= D && rot_dims / 2 <= kMaxHalf,
           "{}: rot_dims {} must be even, <= head dim {} and <= {}", op, rot_dims, D, 2 * kMaxHalf);
  const DevPtr xp = dev_ptr(op, "input", x), yp = dev_ptr(op, "output", y);
  const int64_t rows = B * T * H;
  if (rows == 0 || D == 0) return;
  const int half = rot_dims / 2;
  InvFreq inv{};
  for (int i = 0; i < half; ++i)
    inv.v[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / static_cast<double>(rot_dims)));
  const bool same = xp.p == yp.p && xp.k == yp.k;
  if (half == 0 && same) return;
  constexpr int kThreads = 256;
  rope_kernel<<<grid_for(rows * D, kThreads), kThreads, 0, stream()>>>(xp, yp, rows, T, H, D, half, pos_offset, inv,
                                                                       sign, !same);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void rope_forward(const Tensor& x, const Tensor& y, int rot_dims, float base, int64_t pos_offset) {
  launch_rope("rope_forward", x, y, rot_dims, base, pos_offset, 1.f);
}

void rope_backward(const Tensor& dy, const Tensor& dx, int rot_dims, float base, int64_t pos_offset) {
  launch_rope("rope_backward", dy, dx, rot_dims, base, pos_offset, -1.f);
}

}  // namespace pgolf::ops::cuda
