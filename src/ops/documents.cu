// CUDA document starts: one block per row. Each thread scans a contiguous chunk for its last BOS,
// the block turns the chunk results into an exclusive running maximum, and every thread then
// writes its chunk. Training rows are T <= a few thousand, document packing one row of ~10^5 tokens: still
// microseconds.
#include "ops/cuda_common.cuh"
#include "ops/documents.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;

__global__ void doc_starts_kernel(const int32_t* ids, int32_t* out, int64_t T, int bos, int64_t max_len) {
  __shared__ int32_t last[kThreads];
  const int64_t row = blockIdx.x;
  const int64_t chunk = (T + kThreads - 1) / kThreads;
  const int64_t lo = threadIdx.x * chunk, hi = lo + chunk < T ? lo + chunk : T;
  const int32_t* in = ids + row * T;
  int32_t mine = -1;  // the last BOS inside this thread's chunk
  for (int64_t t = lo; t < hi; ++t)
    if (in[t] == bos) mine = static_cast<int32_t>(t);
  last[threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive running max over the chunks (256 steps)
    int32_t run = 0;
    for (int i = 0; i < kThreads; ++i) {
      const int32_t here = last[i];
      last[i] = run;
      if (here > run) run = here;
    }
  }
  __syncthreads();
  int32_t start = last[threadIdx.x];
  for (int64_t t = lo; t < hi; ++t) {
    if (in[t] == bos) start = static_cast<int32_t>(t);
    // max_len > 0: segments of at most max_len tokens from the document's start (documents.h)
    out[row * T + t] = max_len > 0 ? static_cast<int32_t>(start + (t - start) / max_len * max_len) : start;
  }
}

}  // namespace

void doc_starts(const Tensor& ids, int bos, const Tensor& out, int64_t max_len) {
  const char* op = "doc_starts";
  require_dtype(op, "ids", ids, DType::I32);
  require_dtype(op, "out", out, DType::I32);
  const int64_t B = ids.dim(0), T = ids.dim(1);
  if (B == 0 || T == 0) return;
  PG_CHECK(B <= 0x7fffffff, "{}: {} rows exceed the grid", op, B);
  doc_starts_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream()>>>(ids.ptr<int32_t>(), out.ptr<int32_t>(), T,
                                                                        bos, max_len);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
