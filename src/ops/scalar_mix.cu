// CUDA scalar mix: out = sum_i s_i x_i with the scalars read on the device (CUDA-graph safe). The
// backward writes dx_i = s_i dout and reduces sum(dout * x_i) per block, then adds it atomically.
#include "ops/cuda_common.cuh"
#include "ops/scalar_mix.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

struct Terms {
  int k;
  const float* s[kMaxMixTerms];
  DevPtr x[kMaxMixTerms];
  DevPtr dx[kMaxMixTerms];  // p == nullptr: not wanted
  float* ds[kMaxMixTerms];  // nullptr: not wanted
};

Terms pack(const char* op, const std::vector<MixTerm>& terms) {
  Terms t{};
  t.k = static_cast<int>(terms.size());
  for (int i = 0; i < t.k; ++i) {
    const MixTerm& m = terms[static_cast<size_t>(i)];
    t.s[i] = m.s.ptr<float>();
    t.x[i] = dev_ptr(op, "x", m.x);
    t.dx[i] = m.dx.defined() ? dev_ptr(op, "dx", m.dx) : DevPtr{nullptr, Kind::F32};
    t.ds[i] = m.ds.defined() ? m.ds.ptr<float>() : nullptr;
  }
  return t;
}

__global__ void mix_fwd_kernel(Terms t, DevPtr out, int64_t n) {
  float s[kMaxMixTerms];
  for (int j = 0; j < t.k; ++j) s[j] = *t.s[j];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float v = 0.f;
    for (int j = 0; j < t.k; ++j) v += s[j] * load1(t.x[j], i);
    store1(out, i, v);
  }
}

__global__ void mix_bwd_kernel(Terms t, DevPtr dout, int64_t n) {
  __shared__ float shared[32];
  float s[kMaxMixTerms], acc[kMaxMixTerms] = {};
  for (int j = 0; j < t.k; ++j) s[j] = *t.s[j];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = load1(dout, i);
    for (int j = 0; j < t.k; ++j) {
      if (t.ds[j] != nullptr) acc[j] += g * load1(t.x[j], i);
      if (t.dx[j].p != nullptr) store1(t.dx[j], i, s[j] * g);
    }
  }
  for (int j = 0; j < t.k; ++j) {
    if (t.ds[j] == nullptr) continue;  // uniform over the block
    const float sum = block_sum(acc[j], shared);
    if (threadIdx.x == 0) atomicAdd(t.ds[j], sum);
  }
}

}  // namespace

void scalar_mix_forward(const std::vector<MixTerm>& terms, const Tensor& out) {
  const char* op = "scalar_mix_forward";
  const int64_t n = out.numel();
  if (n == 0) return;
  mix_fwd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(pack(op, terms), dev_ptr(op, "out", out), n);
  PG_CUDA_LAUNCH_CHECK(op);
}

void scalar_mix_backward(const std::vector<MixTerm>& terms, const Tensor& dout) {
  const char* op = "scalar_mix_backward";
  const int64_t n = dout.numel();
  if (n == 0) return;
  // At most 1024 blocks: as many atomic adds per scalar gradient.
  mix_bwd_kernel<<<grid_for(n, kThreads, 1024), kThreads, 0, stream()>>>(pack(op, terms), dev_ptr(op, "dout", dout),
                                                                          n);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
