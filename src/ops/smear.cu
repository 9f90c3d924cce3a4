// CUDA SmearGate (TECHNIQUES.md §5.8). v1: elementwise forward/dx, and a channel-parallel reduction
// for the gate gradient. v2: one warp per token (the 12-wide gate dot and the (e[t-1] . dout[t])
// dot are warp sums); the 13 parameter gradients are reduced per block, then added atomically.
#include "ops/cuda_common.cuh"
#include "ops/smear.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float sigmoidf(float z) { return 1.f / (1.f + __expf(-z)); }

// ---- v1 ----

__global__ void v1_fwd_kernel(DevPtr x, const float* gate, DevPtr out, int64_t n, int64_t T, int64_t C) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % C, t = (i / C) % T;
    const float s = sigmoidf(gate[c]);
    const float prev = t > 0 ? load1(x, i - C) : 0.f;
    store1(out, i, (1.f - s) * load1(x, i) + s * prev);
  }
}

__global__ void v1_dx_kernel(const float* gate, DevPtr dout, DevPtr dx, int64_t n, int64_t T, int64_t C) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % C, t = (i / C) % T;
    const float s = sigmoidf(gate[c]);
    const float next = t + 1 < T ? load1(dout, i + C) : 0.f;
    store1(dx, i, (1.f - s) * load1(dout, i) + s * next);
  }
}

// Block (32, 8): threadIdx.x picks the channel, threadIdx.y strides over rows.
__global__ void v1_dgate_kernel(DevPtr x, const float* gate, DevPtr dout, float* dgate, int64_t rows, int64_t T,
                                int64_t C) {
  __shared__ float part[8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < C)
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * 8 + threadIdx.y; r < rows; r += static_cast<int64_t>(gridDim.y) * 8) {
      const int64_t i = r * C + c;
      const float prev = r % T > 0 ? load1(x, i - C) : 0.f;
      acc += (prev - load1(x, i)) * load1(dout, i);
    }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sum = 0.f;
    for (int j = 0; j < 8; ++j) sum += part[j][threadIdx.x];
    const float s = sigmoidf(gate[c]);
    atomicAdd(dgate + c, s * (1.f - s) * sum);
  }
}

// ---- v2 ----

// sigmoid(w . e[tok, 0:W]) for the whole warp (lanes >= W contribute 0).
__device__ __forceinline__ float v2_gate(DevPtr e, const float* w, int64_t tok, int64_t C, int W, int lane) {
  const float z = lane < W ? w[lane] * load1(e, tok * C + lane) : 0.f;
  return sigmoidf(warp_sum(z));
}

__global__ void v2_fwd_kernel(DevPtr e, const int32_t* ids, const float* w, const float* lambda, int bos, DevPtr out,
                              int64_t tokens, int64_t T, int64_t C, int W) {
  const int lane = threadIdx.x & 31;
  const float lam = lambda[0];
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); tok < tokens;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    const bool m = tok % T >= 1 && ids[tok] != bos;
    const float k = m ? lam * v2_gate(e, w, tok, C, W, lane) : 0.f;
    for (int64_t c = lane; c < C; c += 32) {
      const int64_t i = tok * C + c;
      store1(out, i, load1(e, i) + (m ? k * load1(e, i - C) : 0.f));
    }
  }
}

__global__ void v2_bwd_kernel(DevPtr e, const int32_t* ids, const float* w, const float* lambda, int bos, DevPtr dout,
                              DevPtr de, float* dw, float* dlambda, int64_t tokens, int64_t T, int64_t C, int W) {
  __shared__ float part[kWarps][33];  // per warp: dw[0..31], dlambda at [32]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float lam = lambda[0];
  const float wl = lane < W ? w[lane] : 0.f;
  float acc_w = 0.f, acc_l = 0.f;
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tok < tokens;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t t = tok % T;
    const bool m = t >= 1 && ids[tok] != bos;
    const bool m_next = t + 1 < T && ids[tok + 1] != bos;
    const float g = m ? v2_gate(e, w, tok, C, W, lane) : 0.f;
    const float k_next = m_next ? lam * v2_gate(e, w, tok + 1, C, W, lane) : 0.f;
    float a = 0.f;
    if (m) {
      for (int64_t c = lane; c < C; c += 32) a += load1(e, (tok - 1) * C + c) * load1(dout, tok * C + c);
      a = warp_sum(a);
    }
    const float dz = m ? lam * g * (1.f - g) * a : 0.f;
    acc_l += g * a;
    if (lane < W) acc_w += dz * load1(e, tok * C + lane);
    for (int64_t c = lane; c < C; c += 32) {
      const int64_t i = tok * C + c;
      float v = load1(dout, i);
      if (m_next) v += k_next * load1(dout, i + C);
      if (c < W) v += dz * wl;
      store1(de, i, v);
    }
  }
  part[warp][lane] = acc_w;
  if (lane == 0) part[warp][32] = acc_l;
  __syncthreads();
  if (threadIdx.x <= 32) {
    const int j = threadIdx.x;
    float sum = 0.f;
    for (int q = 0; q < kWarps; ++q) sum += part[q][j];
    if (j < W) atomicAdd(dw + j, sum);
    if (j == 32) atomicAdd(dlambda, sum);
  }
}

}  // namespace

void smear_v1_forward(const Tensor& x, const Tensor& gate, const Tensor& out) {
  const char* op = "smear_v1_forward";
  const int64_t n = x.numel();
  if (n == 0) return;
  v1_fwd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(dev_ptr(op, "x", x), gate.ptr<float>(),
                                                                  dev_ptr(op, "out", out), n, x.dim(1), x.dim(2));
  PG_CUDA_LAUNCH_CHECK(op);
}

void smear_v1_backward(const Tensor& x, const Tensor& gate, const Tensor& dout, const Tensor& dx, const Tensor& dgate) {
  const char* op = "smear_v1_backward";
  const int64_t n = x.numel(), T = x.dim(1), C = x.dim(2), rows = x.dim(0) * T;
  if (n == 0) return;
  v1_dx_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(gate.ptr<float>(), dev_ptr(op, "dout", dout),
                                                                  dev_ptr(op, "dx", dx), n, T, C);
  PG_CUDA_LAUNCH_CHECK(op);
  const unsigned gx = static_cast<unsigned>((C + 31) / 32);
  const unsigned gy = grid_for(rows, 8 * 64, 4096 / static_cast<int64_t>(gx) + 1);  // ~64 rows per thread
  v1_dgate_kernel<<<dim3(gx, gy), dim3(32, 8), 0, stream()>>>(dev_ptr(op, "x", x), gate.ptr<float>(),
                                                               dev_ptr(op, "dout", dout), dgate.ptr<float>(), rows, T, C);
  PG_CUDA_LAUNCH_CHECK(op);
}

void smear_v2_forward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                      const Tensor& out) {
  const char* op = "smear_v2_forward";
  const int64_t tokens = e.dim(0) * e.dim(1);
  if (tokens == 0) return;
  v2_fwd_kernel<<<grid_for(tokens, kWarps), kThreads, 0, stream()>>>(
      dev_ptr(op, "e", e), ids.ptr<int32_t>(), w.ptr<float>(), lambda.ptr<float>(), bos, dev_ptr(op, "out", out),
      tokens, e.dim(1), e.dim(2), static_cast<int>(w.numel()));
  PG_CUDA_LAUNCH_CHECK(op);
}

void smear_v2_backward(const Tensor& e, const Tensor& ids, const Tensor& w, const Tensor& lambda, int bos,
                       const Tensor& dout, const Tensor& de, const Tensor& dw, const Tensor& dlambda) {
  const char* op = "smear_v2_backward";
  const int64_t tokens = e.dim(0) * e.dim(1);
  if (tokens == 0) return;
  // At most 1024 blocks, so the parameter gradients see at most 1024 atomic adds each.
  v2_bwd_kernel<<<grid_for(tokens, kWarps, 1024), kThreads, 0, stream()>>>(
      dev_ptr(op, "e", e), ids.ptr<int32_t>(), w.ptr<float>(), lambda.ptr<float>(), bos, dev_ptr(op, "dout", dout),
      dev_ptr(op, "de", de), dw.ptr<float>(), dlambda.ptr<float>(), tokens, e.dim(1), e.dim(2),
      static_cast<int>(w.numel()));
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
