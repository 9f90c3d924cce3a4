// CUDA BigramHash bucket ids and their trigram extension (TECHNIQUES.md §5.9): one thread per token.
#include "ops/bigram.h"
#include "ops/cuda_common.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

__global__ void hash_kernel(const int32_t* ids, int32_t* out, int64_t n, int64_t T, int64_t buckets) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (i % T == 0) {
      out[i] = static_cast<int32_t>(buckets - 1);
    } else {
      const long long h = (36313LL * ids[i]) ^ (27191LL * ids[i - 1]);
      out[i] = static_cast<int32_t>(h % (buckets - 1));
    }
  }
}

// The trigram ids: positions 0 and 1 of each row take the sentinel bucket (ops/bigram.h).
__global__ void trigram_kernel(const int32_t* ids, int32_t* out, int64_t n, int64_t T, int64_t buckets) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (i % T < 2) {
      out[i] = static_cast<int32_t>(buckets - 1);
    } else {
      const long long h = (36313LL * ids[i]) ^ (27191LL * ids[i - 1]) ^ (51497LL * ids[i - 2]);
      out[i] = static_cast<int32_t>(h % (buckets - 1));
    }
  }
}

}  // namespace

void bigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out) {
  const int64_t n = ids.numel();
  if (n == 0) return;
  hash_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(ids.ptr<int32_t>(), out.ptr<int32_t>(), n, ids.dim(1), buckets);
  PG_CUDA_LAUNCH_CHECK("bigram_hash");
}

void trigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out) {
  const int64_t n = ids.numel();
  if (n == 0) return;
  trigram_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(ids.ptr<int32_t>(), out.ptr<int32_t>(), n, ids.dim(1), buckets);
  PG_CUDA_LAUNCH_CHECK("trigram_hash");
}

}  // namespace pgolf::ops::cuda
