// CUDA random fills: element i is the same pure function of (seed, offset + i) as on the CPU
// (core/rng.h), so a tensor initialised on either device holds the same numbers.
#include "core/rng.h"
#include "ops/cuda_common.cuh"
#include "ops/random.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

template <bool kNormal>
__global__ void fill_random_kernel(DevPtr x, int64_t n, uint64_t seed, uint64_t offset, float a, float b) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint64_t k = offset + static_cast<uint64_t>(i);
    store1(x, i, kNormal ? a + b * rng::normal(seed, k) : rng::uniform(seed, k, a, b));
  }
}

template <bool kNormal> void launch_fill(const char* op, const Tensor& x, uint64_t seed, uint64_t offset, float a,
                                         float b) {
  const DevPtr xp = dev_ptr(op, "x", x);
  const int64_t n = x.numel();
  if (n == 0) return;
  fill_random_kernel<kNormal><<<grid_for(n, 256, 4096), 256, 0, stream()>>>(xp, n, seed, offset, a, b);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void fill_uniform(const Tensor& x, uint64_t seed, uint64_t offset, float lo, float hi) {
  launch_fill<false>("fill_uniform", x, seed, offset, lo, hi);
}

void fill_normal(const Tensor& x, uint64_t seed, uint64_t offset, float mean, float std) {
  launch_fill<true>("fill_normal", x, seed, offset, mean, std);
}

}  // namespace pgolf::ops::cuda
