// CUDA fused residual update + RMSNorm (ops/residual_norm.h).
//
// Fast path (C % 8 == 0, C <= 1024, 16-byte aligned rows): one warp per row, lane l owning the
// 8-channel groups c = 8 l + 256 k (k < CH = ceil(C / 256)).
//   forward:  the row's y values stay in registers between the sum of squares and the n pass, so
//             the stream is read once (x, f | x, x0) and written once (y, n).
//   backward: warps walk rows with a grid stride; pass 1 reads n, dn for the row's dot product,
//             pass 2 re-reads them (L1) with dy, f | x, x0 and writes dy (add form) and df | dx, dx0.
//             The channel sums ds | da, db stay in per-lane registers across rows and meet once per
//             block in shared memory; each block writes its partial row to a fixed scratch and a
//             second kernel adds the blocks' partials in block order, so the sums (and with them
//             training under Adam, which amplifies tiny differences of near-zero gradients) are
//             bit-reproducible: eager steps and CUDA-graph replays give the same bits.
// General path (any C, misaligned views): a scalar warp-per-row kernel, and for the backward a row
// kernel that leaves y's total gradient in dy followed by channel_scale_backward (channel_grad.cu).
#include <algorithm>
#include <array>
#include <mutex>

#include "core/memory.h"
#include "ops/channel_grad.h"
#include "ops/cuda_common.cuh"
#include "ops/residual_norm.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kWarps = 8;  // rows in flight per block (one per warp)
constexpr int kThreads = kWarps * 32;
constexpr int kMaxC = 1024;  // fast path: at most 4 groups of 8 channels per lane

// The stream update of 8 channels at c: add (x + s f) or mix (a x + b x0); `o` is f or x0.
template <bool kMix>
__device__ __forceinline__ void update8(const float* __restrict__ sa, const float* __restrict__ sb, int64_t c,
                                        const float xe[8], const float oe[8], float v[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = kMix ? sa[c + j] * xe[j] + sb[c + j] * oe[j] : xe[j] + sa[c + j] * oe[j];
}

template <int CH, bool kMix>
__global__ void __launch_bounds__(kThreads)
    fwd_vec_kernel(DevPtr x, DevPtr o, const float* __restrict__ sa, const float* __restrict__ sb, DevPtr y, DevPtr n,
                   float* __restrict__ rstd, int64_t N, int C, float g, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const int64_t base = row * C;
  float v[CH][8];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= C) continue;
    float xe[8], oe[8];
    load8(x, base + c, xe);
    load8(o, base + c, oe);
    update8<kMix>(sa, sb, c, xe, oe, v[k]);
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += v[k][j] * v[k][j];
    store8(y, base + c, v[k]);
  }
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= C) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) v[k][j] = v[k][j] * r * g;
    store8(n, base + c, v[k]);
  }
  if (lane == 0) rstd[row] = r;
}

// The general forward: pass 1 writes y and sums squares, pass 2 re-reads y (L1) for n.
template <bool kMix>
__global__ void fwd_scalar_kernel(DevPtr x, DevPtr o, const float* __restrict__ sa, const float* __restrict__ sb,
                                  DevPtr y, DevPtr n, float* __restrict__ rstd, int64_t N, int64_t C, float g,
                                  float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const int64_t base = row * C;
  float ss = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    const float xv = load1(x, base + c), ov = load1(o, base + c);
    const float v = kMix ? sa[c] * xv + sb[c] * ov : xv + sa[c] * ov;
    store1(y, base + c, v);
    ss += v * v;
  }
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  for (int64_t c = lane; c < C; c += 32) store1(n, base + c, load1(y, base + c) * r * g);
  if (lane == 0) rstd[row] = r;
}

// Backward operands of both forms. Add: o1 = f, d1 = df, s1 = s, sum1 = ds (o2/d2 unused).
// Mix: o1 = x, d1 = dx, s1 = a, sum1 = da ; o2 = x0, d2 = dx0, s2 = b, sum2 = db.
struct BwdArgs {
  DevPtr n, dn, dy, o1, o2, d1, d2;
  const float* rstd;
  const float *s1, *s2;
  float *sum1, *sum2;
  float *partials1, *partials2;  // fast path: per-block channel partials (gridDim.x, C), then summed in order
  bool has_dn, has_d1, has_d2, acc1, acc2;
  int64_t N;
  int C;
  float g;
};

// d (8 channels of y's total gradient) = dy + r g dn - kk n, kk = r mean(dn n) / g.
__device__ __forceinline__ void total8(const BwdArgs& p, int64_t i, float r, float kk, float d[8]) {
  load8(p.dy, i, d);
  if (!p.has_dn) return;
  float ne[8], de[8];
  load8(p.n, i, ne);
  load8(p.dn, i, de);
#pragma unroll
  for (int j = 0; j < 8; ++j) d[j] += r * p.g * de[j] - kk * ne[j];
}

// out (=|+=) s d for 8 channels at column c, flat index i.
__device__ __forceinline__ void scaled8(DevPtr out, bool acc, const float* __restrict__ s, int c, int64_t i,
                                        const float d[8]) {
  float e[8];
  if (acc) load8(out, i, e);
#pragma unroll
  for (int j = 0; j < 8; ++j) e[j] = acc ? e[j] + s[c + j] * d[j] : s[c + j] * d[j];
  store8(out, i, e);
}

// Folds the block's per-lane channel partials (acc[k][j] of channel 8 lane + 256 k + j, one set per
// warp) through shared memory `part` (kWarps * C floats) into the block's row of `partials` (gridDim.x, C).
template <int CH>
__device__ __forceinline__ void fold_channels(float acc[CH][8], float* part, float* partials, int C) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= C) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) part[warp * C + c + j] = acc[k][j];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += kThreads) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += part[w * C + c];
    partials[static_cast<int64_t>(blockIdx.x) * C + c] = s;
  }
  __syncthreads();  // `part` is reused by the next fold
}

// out[c] += sum over blocks b = 0, 1, ... of partials[b, c], always in that order.
__global__ void sum_partials_kernel(const float* __restrict__ partials, int blocks, int C, float* __restrict__ out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int b = 0; b < blocks; ++b) s += partials[static_cast<int64_t>(b) * C + c];
  out[c] += s;
}

template <int CH, bool kMix>
__global__ void __launch_bounds__(kThreads) bwd_vec_kernel(BwdArgs p) {
  extern __shared__ float part[];  // kWarps * C
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  float acc1[CH][8] = {}, acc2[CH][8] = {};
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); row < p.N; row += warps) {
    const int64_t base = row * p.C;
    const float r = p.rstd[row];
    float kk = 0.f;
    if (p.has_dn) {
      float dot = 0.f;
#pragma unroll
      for (int k = 0; k < CH; ++k) {
        const int c = lane * 8 + k * 256;
        if (c >= p.C) continue;
        float ne[8], de[8];
        load8(p.n, base + c, ne);
        load8(p.dn, base + c, de);
#pragma unroll
        for (int j = 0; j < 8; ++j) dot += de[j] * ne[j];
      }
      kk = r * warp_sum(dot) / (static_cast<float>(p.C) * p.g);
    }
#pragma unroll
    for (int k = 0; k < CH; ++k) {
      const int c = lane * 8 + k * 256;
      if (c >= p.C) continue;
      const int64_t i = base + c;
      float d[8], e[8];
      total8(p, i, r, kk, d);
      if (!kMix) store8(p.dy, i, d);  // add form: dy becomes x's gradient
      load8(p.o1, i, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc1[k][j] += d[j] * e[j];
      if (kMix) {
        load8(p.o2, i, e);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc2[k][j] += d[j] * e[j];
      }
      // d1 before d2: when dx and dx0 are one tensor, this thread's add reads its own write.
      if (p.has_d1) scaled8(p.d1, p.acc1, p.s1, c, i, d);
      if (kMix && p.has_d2) scaled8(p.d2, p.acc2, p.s2, c, i, d);
    }
  }
  fold_channels<CH>(acc1, part, p.partials1, p.C);
  if (kMix) fold_channels<CH>(acc2, part, p.partials2, p.C);
}

// General path, step 1: dy += r g dn - kk n per row (dy then holds y's total gradient).
__global__ void bwd_rows_scalar_kernel(DevPtr n, DevPtr dn, DevPtr dy, const float* __restrict__ rstd, int64_t N,
                                       int64_t C, float g) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const int64_t base = row * C;
  float dot = 0.f;
  for (int64_t c = lane; c < C; c += 32) dot += load1(dn, base + c) * load1(n, base + c);
  const float r = rstd[row];
  const float kk = r * warp_sum(dot) / (static_cast<float>(C) * g);
  for (int64_t c = lane; c < C; c += 32)
    store1(dy, base + c, load1(dy, base + c) + r * g * load1(dn, base + c) - kk * load1(n, base + c));
}

bool vec_ok(int64_t C, std::initializer_list<DevPtr> ps) {
  if (C % 8 != 0 || C > kMaxC) return false;
  for (const DevPtr& p : ps)
    if (p.p != nullptr && !aligned16(p.p)) return false;
  return true;
}

unsigned row_grid(int64_t N) { return static_cast<unsigned>((N + kWarps - 1) / kWarps); }

template <bool kMix>
void launch_fwd(const char* op, DevPtr x, DevPtr o, const float* sa, const float* sb, DevPtr y, DevPtr n, float* rstd,
                int64_t N, int64_t C, float g, float eps) {
  if (N == 0 || C == 0) return;
  const unsigned grid = row_grid(N);
  if (!vec_ok(C, {x, o, y, n})) {
    fwd_scalar_kernel<kMix><<<grid, kThreads, 0, stream()>>>(x, o, sa, sb, y, n, rstd, N, C, g, eps);
  } else {
    const int c = static_cast<int>(C);
    switch ((C + 255) / 256) {
      case 1: fwd_vec_kernel<1, kMix><<<grid, kThreads, 0, stream()>>>(x, o, sa, sb, y, n, rstd, N, c, g, eps); break;
      case 2: fwd_vec_kernel<2, kMix><<<grid, kThreads, 0, stream()>>>(x, o, sa, sb, y, n, rstd, N, c, g, eps); break;
      case 3: fwd_vec_kernel<3, kMix><<<grid, kThreads, 0, stream()>>>(x, o, sa, sb, y, n, rstd, N, c, g, eps); break;
      default: fwd_vec_kernel<4, kMix><<<grid, kThreads, 0, stream()>>>(x, o, sa, sb, y, n, rstd, N, c, g, eps); break;
    }
  }
  PG_CUDA_LAUNCH_CHECK(op);
}

constexpr unsigned kMaxBwdBlocks = 132u * 4u;
constexpr int kMaxDevices = 16;

// Per-device scratch for the backward's per-block channel partials: two sets of (kMaxBwdBlocks, kMaxC)
// floats (4.3 MB), allocated at the first call (an eager step, before any capture) and never regrown,
// so a captured step allocates nothing. One stream uses it at a time (the training stream).
float* partials_scratch() {
  static std::mutex mu;
  static std::array<float*, kMaxDevices> bufs{};
  int dev = 0;
  PG_CUDA_CHECK(cudaGetDevice(&dev), "querying the device for the residual-norm scratch");
  PG_CHECK(dev >= 0 && dev < kMaxDevices, "residual_norm: device {} out of range", dev);
  std::lock_guard<std::mutex> lock(mu);
  float*& b = bufs[static_cast<size_t>(dev)];
  if (!b)
    b = static_cast<float*>(mem_alloc(sizeof(float) * 2 * kMaxBwdBlocks * kMaxC, Device::CUDA,
                                      "residual-norm backward channel partials"));
  return b;
}

// The fast backward; false when the shapes or alignment need the general path.
template <bool kMix>
bool launch_bwd_vec(const char* op, const BwdArgs& p) {
  if (!vec_ok(p.C, {p.n, p.dn, p.dy, p.o1, p.o2, p.d1, p.d2})) return false;
  if (p.N == 0) return true;
  // Enough blocks to fill an H100/H200 (132 SMs) a few times over; each warp then walks several rows,
  // so the per-block channel fold is amortised.
  const unsigned grid = std::min<unsigned>(row_grid(p.N), kMaxBwdBlocks);
  const size_t smem = sizeof(float) * kWarps * static_cast<size_t>(p.C);
  BwdArgs q = p;
  q.partials1 = partials_scratch();
  q.partials2 = q.partials1 + static_cast<int64_t>(kMaxBwdBlocks) * kMaxC;
  switch ((p.C + 255) / 256) {
    case 1: bwd_vec_kernel<1, kMix><<<grid, kThreads, smem, stream()>>>(q); break;
    case 2: bwd_vec_kernel<2, kMix><<<grid, kThreads, smem, stream()>>>(q); break;
    case 3: bwd_vec_kernel<3, kMix><<<grid, kThreads, smem, stream()>>>(q); break;
    default: bwd_vec_kernel<4, kMix><<<grid, kThreads, smem, stream()>>>(q); break;
  }
  PG_CUDA_LAUNCH_CHECK(op);
  const unsigned cgrid = static_cast<unsigned>((p.C + 255) / 256);
  sum_partials_kernel<<<cgrid, 256, 0, stream()>>>(q.partials1, static_cast<int>(grid), static_cast<int>(p.C), p.sum1);
  if (kMix) sum_partials_kernel<<<cgrid, 256, 0, stream()>>>(q.partials2, static_cast<int>(grid), static_cast<int>(p.C), p.sum2);
  PG_CUDA_LAUNCH_CHECK(op);
  return true;
}

void bwd_rows_general(const char* op, const BwdArgs& p) {
  if (!p.has_dn || p.N == 0 || p.C == 0) return;
  bwd_rows_scalar_kernel<<<row_grid(p.N), kThreads, 0, stream()>>>(p.n, p.dn, p.dy, p.rstd, p.N, p.C, p.g);
  PG_CUDA_LAUNCH_CHECK(op);
}

void check_rows(const char* op, const Tensor& n, const Tensor& rstd, const Tensor& t, const char* what) {
  PG_CHECK(n.ndim() == 2 && t.numel() == n.numel() && rstd.numel() == n.dim(0), "{}: {} {} / rstd {} do not match n {}",
           op, what, t.desc(), rstd.desc(), n.desc());
}

}  // namespace

void add_rmsnorm_forward(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& y, const Tensor& n,
                         const Tensor& rstd, float g, float eps) {
  const char* op = "add_rmsnorm_forward";
  require_dtype(op, "y", y, DType::F32);
  require_dtype(op, "rstd", rstd, DType::F32);
  require_dtype(op, "s", s, DType::F32);
  launch_fwd<false>(op, dev_ptr(op, "x", x), dev_ptr(op, "f", f), s.ptr<float>(), nullptr, dev_ptr(op, "y", y),
                    dev_ptr(op, "n", n), rstd.ptr<float>(), x.dim(0), x.dim(1), g, eps);
}

void mix_rmsnorm_forward(const Tensor& a, const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& y,
                         const Tensor& n, const Tensor& rstd, float g, float eps) {
  const char* op = "mix_rmsnorm_forward";
  require_dtype(op, "y", y, DType::F32);
  require_dtype(op, "rstd", rstd, DType::F32);
  require_dtype(op, "a", a, DType::F32);
  require_dtype(op, "b", b, DType::F32);
  launch_fwd<true>(op, dev_ptr(op, "x", x), dev_ptr(op, "x0", x0), a.ptr<float>(), b.ptr<float>(),
                   dev_ptr(op, "y", y), dev_ptr(op, "n", n), rstd.ptr<float>(), x.dim(0), x.dim(1), g, eps);
}

namespace {
DevPtr optional_ptr(const char* op, const char* name, const Tensor& t) {
  return t.defined() ? dev_ptr(op, name, t) : DevPtr{nullptr, Kind::F32};
}

// The operands both backward forms share: the norm's saved n and rstd, its output gradient dn (optional), y's
// gradient dy (f32), the gain; the form-specific fields are left empty.
BwdArgs common_bwd_args(const char* op, const Tensor& n, const Tensor& rstd, const Tensor& dn, const Tensor& dy,
                        float g) {
  require_dtype(op, "dy", dy, DType::F32);
  check_rows(op, n, rstd, dy, "dy");
  PG_CHECK(n.dim(1) <= 0x7fffffff, "{}: {} channels is too many", op, n.dim(1));
  BwdArgs p{};
  p.n = dev_ptr(op, "n", n);
  p.has_dn = dn.defined();
  p.dn = optional_ptr(op, "dn", dn);
  p.dy = dev_ptr(op, "dy", dy);
  p.o2 = p.d2 = DevPtr{nullptr, Kind::F32};
  p.rstd = rstd.ptr<float>();
  p.N = n.dim(0);
  p.C = static_cast<int>(n.dim(1));
  p.g = g;
  return p;
}
}  // namespace

void add_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& s,
                          const Tensor& f, const Tensor& dy, const Tensor& ds, const Tensor& df, bool accumulate) {
  const char* op = "add_rmsnorm_backward";
  require_dtype(op, "ds", ds, DType::F32);
  BwdArgs p = common_bwd_args(op, n, rstd, dn, dy, g);
  p.o1 = dev_ptr(op, "f", f);
  p.has_d1 = df.defined();
  p.d1 = optional_ptr(op, "df", df);
  p.acc1 = accumulate;
  p.s1 = s.ptr<float>();
  p.sum1 = ds.ptr<float>();
  if (launch_bwd_vec<false>(op, p)) return;
  bwd_rows_general(op, p);
  channel_scale_backward(dy, s, f, ds, df, accumulate);
}

void mix_rmsnorm_backward(const Tensor& n, const Tensor& rstd, const Tensor& dn, float g, const Tensor& a,
                          const Tensor& x, const Tensor& b, const Tensor& x0, const Tensor& dy, const Tensor& da,
                          const Tensor& db, const Tensor& dx, bool acc_x, const Tensor& dx0, bool acc_x0) {
  const char* op = "mix_rmsnorm_backward";
  require_dtype(op, "da", da, DType::F32);
  require_dtype(op, "db", db, DType::F32);
  BwdArgs p = common_bwd_args(op, n, rstd, dn, dy, g);
  p.o1 = dev_ptr(op, "x", x);
  p.o2 = dev_ptr(op, "x0", x0);
  p.has_d1 = dx.defined();
  p.d1 = optional_ptr(op, "dx", dx);
  p.has_d2 = dx0.defined();
  p.d2 = optional_ptr(op, "dx0", dx0);
  p.acc1 = acc_x;
  p.acc2 = acc_x0;
  p.s1 = a.ptr<float>();
  p.s2 = b.ptr<float>();
  p.sum1 = da.ptr<float>();
  p.sum2 = db.ptr<float>();
  if (launch_bwd_vec<true>(op, p)) return;
  // General path: dy (scratch, as the header allows) takes y's total gradient, then one column pass
  // per input; dx's pass runs first, so a dx0 that is the same tensor adds onto it.
  bwd_rows_general(op, p);
  channel_scale_backward(dy, a, x, da, dx, acc_x);
  channel_scale_backward(dy, b, x0, db, dx0, acc_x0);
}

}  // namespace pgolf::ops::cuda
