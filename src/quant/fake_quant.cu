// CUDA fake quantization (quant/fake_quant.h): one block per row; the row's clip (max |w| or
// k·std in double), then W_q = clamp(rint(w / s), qlo, qmax) · s with IEEE f32 division and
// ties-to-even rounding, as the CPU reference does.
#include "ops/cuda_common.cuh"
#include "quant/fake_quant.h"

namespace pgolf::quant::cuda {

using namespace pgolf::ops::cuda::detail;

namespace {

constexpr int kThreads = 256;

__device__ double block_sum_d(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double t = shared[0];
  __syncthreads();
  return t;
}

__global__ void fq_fwd_kernel(const float* w, DevPtr out, float* scales, int64_t cols, float qlo, float qhi,
                              float sd_k, float min_scale) {
  __shared__ double sh_d[kThreads];
  __shared__ float sh_f[32];
  const float* row = w + static_cast<int64_t>(blockIdx.x) * cols;
  float clip;
  if (sd_k > 0.f) {
    double sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) sum += row[c];
    const double mean = block_sum_d(sum, sh_d) / static_cast<double>(cols);
    double sum2 = 0;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const double x = row[c] - mean;
      sum2 += x * x;
    }
    const double var = block_sum_d(sum2, sh_d) / static_cast<double>(cols);
    clip = sd_k * static_cast<float>(sqrt(var));
  } else {
    float m = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) m = fmaxf(m, fabsf(row[c]));
    clip = block_max(m, sh_f);
  }
  const float s = fmaxf(__fdiv_rn(clip, qhi), min_scale);
  if (scales != nullptr && threadIdx.x == 0) scales[blockIdx.x] = s;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    float v = 0.f;
    if (s > 0.f) {
      const float q = rintf(__fdiv_rn(row[c], s));
      v = __fmul_rn(fminf(fmaxf(q, qlo), qhi), s);
    }
    store1(out, base + c, v);
  }
}

__global__ void fq_bwd_kernel(const float* w, const float* scales, DevPtr dout, DevPtr dw, int64_t cols, float lo,
                              float hi, int clipped) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  const float s = clipped ? scales[blockIdx.x] : 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    float v = load1(dout, base + c);
    if (clipped && s > 0.f) {
      const float x = __fdiv_rn(w[base + c], s);
      if (!(x >= lo && x <= hi)) v = 0.f;
    }
    store1(dw, base + c, v);
  }
}

}  // namespace

void fake_quant_forward(const Tensor& w, const Tensor& out, const FakeQuantSpec& spec, const Tensor& scales) {
  const char* op = "fake_quant_forward";
  require_dtype(op, "w", w, DType::F32);
  const int64_t rows = w.dim(0), cols = w.numel() / rows;
  if (cols == 0) return;
  PG_CHECK(rows <= 0x7fffffff, "{}: {} rows exceed the grid limit", op, rows);
  const int qmax = (1 << (spec.bits - 1)) - 1;
  const float qhi = static_cast<float>(qmax), qlo = spec.symmetric ? -qhi : -qhi - 1.f;
  float* sp = scales.defined() ? scales.ptr<float>() : nullptr;
  fq_fwd_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(w.ptr<float>(), dev_ptr(op, "out", out), sp,
                                                                         cols, qlo, qhi, spec.sd_k, spec.min_scale);
  PG_CUDA_LAUNCH_CHECK(op);
}

void fake_quant_backward(const Tensor& w, const Tensor& scales, const Tensor& dout, const Tensor& dw,
                         const FakeQuantSpec& spec, bool clipped_ste) {
  const char* op = "fake_quant_backward";
  require_dtype(op, "w", w, DType::F32);
  const int64_t rows = w.dim(0), cols = w.numel() / rows;
  if (cols == 0) return;
  const int qmax = (1 << (spec.bits - 1)) - 1;
  const float hi = static_cast<float>(qmax) + 0.5f,
              lo = (spec.symmetric ? -static_cast<float>(qmax) : -static_cast<float>(qmax) - 1.f) - 0.5f;
  const float* sp = clipped_ste ? scales.ptr<float>() : nullptr;
  fq_bwd_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
      w.ptr<float>(), sp, dev_ptr(op, "dout", dout), dev_ptr(op, "dw", dw), cols, lo, hi, clipped_ste ? 1 : 0);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::quant::cuda
