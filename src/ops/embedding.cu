// CUDA embedding gather / scatter-add: one warp per token row, 16-byte vectors (and 4-float atomics)
// when rows allow.
#include "ops/cuda_common.cuh"
#include "ops/embedding.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kRowsPerBlock = 8;

// An id outside [0, V) cannot be reported from inside a captured graph, so its row becomes NaN:
// the loss turns NaN at once instead of training on a wrong row.
__global__ void embedding_forward_kernel(const int32_t* __restrict__ ids, DevPtr table, DevPtr out, int64_t N,
                                         int64_t V, int64_t C, bool vec) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const int64_t id = ids[n];
  const bool ok = id >= 0 && id < V;
  const int64_t src = (ok ? id : 0) * C, dst = n * C;
  if (vec) {
    for (int64_t c = lane * 8; c < C; c += 32 * 8) {
      float e[8];
      load8(table, src + c, e);
      if (!ok) {
#pragma unroll
        for (int j = 0; j < 8; ++j) e[j] = __int_as_float(0x7fc00000);
      }
      store8(out, dst + c, e);
    }
  } else {
    for (int64_t c = lane; c < C; c += 32)
      store1(out, dst + c, ok ? load1(table, src + c) : __int_as_float(0x7fc00000));
  }
}

// Ids outside [0, V) contribute nothing (never write outside dtable). Float atomics: the sums' order,
// and so their last bits, vary from run to run (as they always have here).
// The vector path adds 4 floats per atomic (sm_90's red.global.add.v4.f32 through atomicAdd(float4*)):
// a quarter of the scalar path's atomic operations, which are what bounds the scatter (the L2's atomic
// units, not DRAM). A lane reads both of its 8-channel groups of each 512-channel span before its
// atomics, since a load after an atomic to a possibly aliasing address could not be hoisted.
__global__ void embedding_backward_kernel(const int32_t* __restrict__ ids, DevPtr dout, float* __restrict__ dtable,
                                          int64_t N, int64_t V, int64_t C, bool vec) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const int64_t id = ids[n];
  if (id < 0 || id >= V) return;
  float* row = dtable + id * C;
  const int64_t src = n * C;
  if (vec) {
    for (int64_t c0 = lane * 8; c0 < C; c0 += 2 * 32 * 8) {
      const int64_t c1 = c0 + 32 * 8;
      float e[2][8];
      load8(dout, src + c0, e[0]);
      if (c1 < C) load8(dout, src + c1, e[1]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t c = h == 0 ? c0 : c1;
        if (c >= C) break;
        float4* dst = reinterpret_cast<float4*>(row + c);
        atomicAdd(dst, make_float4(e[h][0], e[h][1], e[h][2], e[h][3]));
        atomicAdd(dst + 1, make_float4(e[h][4], e[h][5], e[h][6], e[h][7]));
      }
    }
  } else {
    for (int64_t c = lane; c < C; c += 32) atomicAdd(row + c, load1(dout, src + c));
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const char* op = "embedding_forward";
  require_dtype(op, "ids", ids, DType::I32);
  PG_CHECK(table.ndim() == 2, "{}: table is {}, expected (V, C)", op, table.desc());
  const int64_t N = ids.numel(), V = table.dim(0), C = table.dim(1);
  PG_CHECK(out.numel() == N * C, "{}: out {} does not hold {} rows of {}", op, out.desc(), N, C);
  if (N == 0 || C == 0) return;
  const DevPtr tp = dev_ptr(op, "table", table), op_ = dev_ptr(op, "out", out);
  const bool vec = C % 8 == 0 && aligned16(tp.p) && aligned16(op_.p);
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  embedding_forward_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(ids.ptr<int32_t>(), tp, op_, N, V, C, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  const char* op = "embedding_backward";
  require_dtype(op, "ids", ids, DType::I32);
  require_dtype(op, "dtable", dtable, DType::F32);
  PG_CHECK(dtable.ndim() == 2, "{}: dtable is {}, expected (V, C)", op, dtable.desc());
  const int64_t N = ids.numel(), V = dtable.dim(0), C = dtable.dim(1);
  PG_CHECK(dout.numel() == N * C, "{}: dout {} does not hold {} rows of {}", op, dout.desc(), N, C);
  if (N == 0 || C == 0) return;
  const DevPtr dp = dev_ptr(op, "dout", dout);
  const bool vec = C % 8 == 0 && aligned16(dp.p) && aligned16(dtable.data());
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  embedding_backward_kernel<<<grid, kRowsPerBlock * 32, 0, stream()>>>(ids.ptr<int32_t>(), dp, dtable.ptr<float>(),
                                                                       N, V, C, vec);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
