// CUDA fused residual update + RMSNorm (ops/residual_norm.h).
//
// Fast path (C % 8 == 0, C <= 1024, 16-byte aligned rows): one warp per row, lane l owning the
// 8-channel groups c = 8 l + 256 k (k < CH = ceil(C / 256)).
//   forward:  the row's y values stay in registers between the sum of squares and the n pass, so
//             the stream is read once (x, f | x, x0) and written once (y, n).
//   backward: warps walk rows with a grid stride. A lane loads its whole share of the row (n, dn, dy,
//             f | x, x0, and the gradients it adds into) before the row's dot product, then writes
//             dy (add form) and df | dx, dx0 from registers: one memory round trip per row.
//             The channel sums ds | da, db accumulate per warp in shared memory across rows and meet
//             once per block; each block writes its partial row to a fixed scratch and a second
//             kernel adds the blocks' partials in a fixed order, so the sums (and with them
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
  float v[CH][8], oe[CH][8];
  float ss = 0.f;
  // Both inputs of every group first: y may alias x, so a load after the first store of y could not
  // be hoisted above it and each group would cost a memory round trip.
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= C) continue;
    load8(x, base + c, v[k]);
    load8(o, base + c, oe[k]);
  }
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= C) continue;
    update8<kMix>(sa, sb, c, v[k], oe[k], v[k]);
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

// A value as stored in `k` and read back: chains two updates of one element (dx and dx0 the same
// tensor) in registers with the rounding the store and re-load between them would apply.
__device__ __forceinline__ float round_to(Kind k, float v) {
  switch (k) {
    case Kind::F32: return v;
    case Kind::BF16: return bf16_bits_to_f32(f32_to_bf16_bits(v));
    default: return __half2float(__float2half_rn(v));
  }
}

// The channel sums of one warp live in shared memory, `part` (kWarps, C) for ds | da and a second such
// array for db; lane l of warp w alone touches part[w C + 8 l + 256 k + j], so no barrier is needed
// until the fold. (In registers they would cost 16 CH of them per sum, and the mix form at C = 512
// would spill.) acc8 adds d * e to the 8 sums of channels c..c+7.
__device__ __forceinline__ void acc8(float* sums, int c, const float d[8], const float e[8]) {
  float4* q = reinterpret_cast<float4*>(sums + c);
  float4 a = q[0], b = q[1];
  a.x += d[0] * e[0], a.y += d[1] * e[1], a.z += d[2] * e[2], a.w += d[3] * e[3];
  b.x += d[4] * e[4], b.y += d[5] * e[5], b.z += d[6] * e[6], b.w += d[7] * e[7];
  q[0] = a, q[1] = b;
}

// Sums the warps' channel sums `part` (kWarps, C) in warp order into the block's row of `partials`
// (gridDim.x, C).
__device__ __forceinline__ void fold_channels(const float* part, float* partials, int C) {
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += kThreads) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += part[w * C + c];
    partials[static_cast<int64_t>(blockIdx.x) * C + c] = s;
  }
}

// out[c] += sum over blocks b of partials[b, c] (blockIdx.y picks set 1 or 2), in a fixed order: thread
// row ty adds the blocks b = ty, ty + 32, ... in turn, then the 32 row sums are added in ty order. The
// order depends on nothing but the block count, so every run gives the same bits; 32 rows of threads
// per column keep enough loads in flight (one thread per column walked 528 dependent-latency loads).
constexpr int kSumRows = 32;
__global__ void __launch_bounds__(32 * kSumRows)
    sum_partials_kernel(const float* __restrict__ partials1, const float* __restrict__ partials2, int blocks, int C,
                        float* __restrict__ out1, float* __restrict__ out2) {
  __shared__ float rows[kSumRows][33];
  const float* partials = blockIdx.y == 0 ? partials1 : partials2;
  float* out = blockIdx.y == 0 ? out1 : out2;
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < C) {
#pragma unroll 4
    for (int b = threadIdx.y; b < blocks; b += kSumRows) s += partials[static_cast<int64_t>(b) * C + c];
  }
  rows[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.f;
#pragma unroll
    for (int r = 0; r < kSumRows; ++r) t += rows[r][threadIdx.x];
    out[c] += t;
  }
}

// One row, one warp, lane l owning channels c = 8 l + 256 k. Every load of the row (n, dn, dy, the
// update's inputs, and the old gradients that are accumulated into) is issued before the first store:
// the operands are type-erased pointers the compiler must assume may alias, so a load after a store
// could not be hoisted, and the previous form's load / store / load chain cost a memory round trip
// each. The per-lane registers give each warp a whole row (~8 KB at C = 512, bf16 n) in flight.
template <int CH, bool kMix>
__global__ void __launch_bounds__(kThreads, CH <= 2 ? 2 : 1) bwd_vec_kernel(BwdArgs p) {
  extern __shared__ float4 smem[];  // the channel sums: (kWarps, C) for sum1, then (kWarps, C) for sum2
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* part1 = reinterpret_cast<float*>(smem);
  float* part2 = part1 + kWarps * p.C;
  float* acc1 = part1 + warp * p.C;
  float* acc2 = part2 + warp * p.C;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  // dx and dx0 one tensor: one read-modify-write per element, dx's update first (the header's order).
  const bool same = kMix && p.has_d1 && p.has_d2 && p.d1.p == p.d2.p;
  const bool load1old = p.has_d1 && p.acc1, load2old = kMix && p.has_d2 && p.acc2 && !same;
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int c = lane * 8 + k * 256;
    if (c >= p.C) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      acc1[c + j] = 0.f;
      if (kMix) acc2[c + j] = 0.f;
    }
  }
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); row < p.N; row += warps) {
    const int64_t base = row * p.C;
    const float r = p.rstd[row];
    // d: dy + r g dn, then y's total gradient ; nn: n ; e1, e2: the update's inputs (f | x, x0) ;
    // old1, old2: the gradients accumulated into.
    float d[CH][8], nn[CH][8], e1[CH][8], e2[CH][8], old1[CH][8], old2[CH][8];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < CH; ++k) {
      const int c = lane * 8 + k * 256;
      if (c >= p.C) continue;
      const int64_t i = base + c;
      load8(p.dy, i, d[k]);
      if (p.has_dn) {
        float de[8];
        load8(p.n, i, nn[k]);
        load8(p.dn, i, de);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          dot += de[j] * nn[k][j];
          d[k][j] += r * p.g * de[j];
        }
      }
      load8(p.o1, i, e1[k]);
      if (kMix) load8(p.o2, i, e2[k]);
      if (load1old) load8(p.d1, i, old1[k]);
      if (load2old) load8(p.d2, i, old2[k]);
    }
    // d = dy + r g dn - kk n, kk = r mean(dn n) / g.
    const float kk = p.has_dn ? r * warp_sum(dot) / (static_cast<float>(p.C) * p.g) : 0.f;
#pragma unroll
    for (int k = 0; k < CH; ++k) {
      const int c = lane * 8 + k * 256;
      if (c >= p.C) continue;
      const int64_t i = base + c;
      if (p.has_dn) {
#pragma unroll
        for (int j = 0; j < 8; ++j) d[k][j] -= kk * nn[k][j];
      }
      if (!kMix) store8(p.dy, i, d[k]);  // add form: dy becomes x's gradient
      acc8(acc1, c, d[k], e1[k]);
      if (kMix) acc8(acc2, c, d[k], e2[k]);
      // out (=|+=) s d. When dx and dx0 are one tensor, dx0's update adds onto dx's stored value.
      if (p.has_d1) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float v = p.s1[c + j] * d[k][j];
          old1[k][j] = p.acc1 ? old1[k][j] + v : v;
        }
        if (!same) store8(p.d1, i, old1[k]);
      }
      if (kMix && p.has_d2) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float v = p.s2[c + j] * d[k][j];
          const float prev = same ? round_to(p.d2.k, old1[k][j]) : old2[k][j];
          old2[k][j] = p.acc2 ? prev + v : v;
        }
        store8(p.d2, i, old2[k]);
      }
    }
  }
  fold_channels(part1, p.partials1, p.C);
  if (kMix) fold_channels(part2, p.partials2, p.C);
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

// The mix form's channel sums need 64 KB of shared memory at C = 1024, above the 48 KB a launch gets
// without an opt-in; the first call per kernel and process (one device per process, as gdn.cu) raises
// the limit. That is not a stream operation, and later calls (e.g. under graph capture) skip it.
template <int CH, bool kMix>
void launch_bwd_kernel(const char* op, unsigned grid, size_t smem, const BwdArgs& q) {
  static const bool raised = [op] {
    PG_CUDA_CHECK(cudaFuncSetAttribute(bwd_vec_kernel<CH, kMix>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(sizeof(float) * kWarps * kMaxC * 2)),
                  op);
    return true;
  }();
  (void)raised;
  bwd_vec_kernel<CH, kMix><<<grid, kThreads, smem, stream()>>>(q);
  PG_CUDA_LAUNCH_CHECK(op);
}

// The fast backward; false when the shapes or alignment need the general path.
template <bool kMix>
bool launch_bwd_vec(const char* op, const BwdArgs& p) {
  if (!vec_ok(p.C, {p.n, p.dn, p.dy, p.o1, p.o2, p.d1, p.d2})) return false;
  if (p.N == 0) return true;
  // Enough blocks to fill an H100/H200 (132 SMs) a few times over; each warp then walks several rows,
  // so the per-block channel fold is amortised.
  const unsigned grid = std::min<unsigned>(row_grid(p.N), kMaxBwdBlocks);
  const size_t smem = sizeof(float) * kWarps * static_cast<size_t>(p.C) * (kMix ? 2 : 1);
  BwdArgs q = p;
  q.partials1 = partials_scratch();
  q.partials2 = q.partials1 + static_cast<int64_t>(kMaxBwdBlocks) * kMaxC;
  switch ((p.C + 255) / 256) {
    case 1: launch_bwd_kernel<1, kMix>(op, grid, smem, q); break;
    case 2: launch_bwd_kernel<2, kMix>(op, grid, smem, q); break;
    case 3: launch_bwd_kernel<3, kMix>(op, grid, smem, q); break;
    default: launch_bwd_kernel<4, kMix>(op, grid, smem, q); break;
  }
  const dim3 cgrid(static_cast<unsigned>((p.C + 31) / 32), kMix ? 2u : 1u);
  sum_partials_kernel<<<cgrid, dim3(32, kSumRows), 0, stream()>>>(q.partials1, q.partials2, static_cast<int>(grid),
                                                                   p.C, p.sum1, p.sum2);
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
