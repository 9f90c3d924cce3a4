#include "ops/bigram.h"

#include "ops/check.h"

namespace pgolf::ops {

namespace ref {
int32_t bigram_bucket(int32_t prev, int32_t cur, bool first, int64_t buckets) {
  if (first) return static_cast<int32_t>(buckets - 1);
  const int64_t h = (int64_t{36313} * cur) ^ (int64_t{27191} * prev);
  return static_cast<int32_t>(h % (buckets - 1));
}

int32_t trigram_bucket(int32_t prev2, int32_t prev, int32_t cur, bool first, int64_t buckets) {
  if (first) return static_cast<int32_t>(buckets - 1);
  const int64_t h = (int64_t{36313} * cur) ^ (int64_t{27191} * prev) ^ (int64_t{51497} * prev2);
  return static_cast<int32_t>(h % (buckets - 1));
}
}  // namespace ref

namespace {

// The checks both hashes share; true when the work goes to the GPU.
bool check_hash_args(const char* op, const Tensor& ids, int64_t buckets, const Tensor& out) {
  check_defined(op, "ids", ids);
  check_dtype(op, "ids", ids, {DType::I32});
  check_ndim(op, "ids", ids, 2);
  check_defined(op, "out", out);
  check_dtype(op, "out", out, {DType::I32});
  check_shape(op, "out", out, ids.shape());
  PG_CHECK(buckets >= 2 && buckets <= (int64_t{1} << 30), "{}: buckets {} must be in 2..2^30", op, buckets);
  return check_same_device(op, {&ids, &out}) == Device::CUDA;
}

// The CPU walk shared by the hash ops: out[b, t] = bucket(row b, t), every id checked non-negative.
template <class Bucket>
void hash_rows(const char* op, const Tensor& ids, const Tensor& out, Bucket&& bucket) {
  const int64_t B = ids.dim(0), T = ids.dim(1);
  const int32_t* in = ids.ptr<int32_t>();
  int32_t* o = out.ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      PG_CHECK(in[i] >= 0, "{}: negative token id {} at ({}, {})", op, in[i], b, t);
      o[i] = bucket(in + b * T, t);
    }
}

}  // namespace

void bigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out) {
  const char* op = "bigram_hash";
  if (check_hash_args(op, ids, buckets, out)) {
    PG_CUDA_DISPATCH(op, cuda::bigram_hash(ids, buckets, out));
    return;
  }
  hash_rows(op, ids, out, [&](const int32_t* row, int64_t t) {
    return ref::bigram_bucket(t > 0 ? row[t - 1] : 0, row[t], t == 0, buckets);
  });
}

void trigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out) {
  const char* op = "trigram_hash";
  if (check_hash_args(op, ids, buckets, out)) {
    PG_CUDA_DISPATCH(op, cuda::trigram_hash(ids, buckets, out));
    return;
  }
  hash_rows(op, ids, out, [&](const int32_t* row, int64_t t) {
    return t < 2 ? ref::trigram_bucket(0, 0, row[t], true, buckets)
                 : ref::trigram_bucket(row[t - 2], row[t - 1], row[t], false, buckets);
  });
}

}  // namespace pgolf::ops
