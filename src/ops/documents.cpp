#include "ops/documents.h"

#include "ops/check.h"

namespace pgolf::ops {

void doc_starts(const Tensor& ids, int bos, const Tensor& out, int64_t max_len) {
  const char* op = "doc_starts";
  check_defined(op, "ids", ids);
  check_defined(op, "out", out);
  check_dtype(op, "ids", ids, {DType::I32});
  check_dtype(op, "out", out, {DType::I32});
  check_ndim(op, "ids", ids, 2);
  check_shape(op, "out", out, ids.shape());
  PG_CHECK(max_len >= 0, "{}: max_len {} must be >= 0 (0 = documents are not cut)", op, max_len);
  if (check_same_device(op, {&ids, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::doc_starts(ids, bos, out, max_len));
    return;
  }
  const int64_t B = ids.dim(0), T = ids.dim(1);
  const int32_t* in = ids.ptr<int32_t>();
  int32_t* o = out.ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    int32_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (in[b * T + t] == bos) start = static_cast<int32_t>(t);
      o[b * T + t] = max_len > 0 ? static_cast<int32_t>(start + (t - start) / max_len * max_len) : start;
    }
  }
}

}  // namespace pgolf::ops
