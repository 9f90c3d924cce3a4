#include "ops/embedding.h"

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

void check_ids(const char* op, const Tensor& ids, int64_t V) {
  const int32_t* id = ids.ptr<int32_t>();
  for (int64_t n = 0, N = ids.numel(); n < N; ++n)
    PG_CHECK(id[n] >= 0 && id[n] < V, "{}: ids[{}] = {} is outside the table's [0, {}) rows ({})", op, n, id[n], V,
             ids.desc());
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const char* op = "embedding_forward";
  check_defined(op, "ids", ids);
  check_dtype(op, "ids", ids, {DType::I32});
  check_ndim(op, "ids", ids, 1);
  cpu::check_fb(op, "table", table);
  check_ndim(op, "table", table, 2);
  cpu::check_fb(op, "out", out);
  check_shape(op, "out", out, Shape{ids.dim(0), table.dim(1)});
  if (check_same_device(op, {&ids, &table, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::embedding_forward(ids, table, out));
    return;
  }
  int64_t N = ids.dim(0), V = table.dim(0), C = table.dim(1);
  check_ids(op, ids, V);
  const int32_t* id = ids.ptr<int32_t>();
  cpu::visit_fb(op, "table", table, [&](auto* tp) {
    cpu::visit_fb(op, "out", out, [&](auto* o) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) st(o[n * C + c], ld<float>(tp[id[n] * C + c]));
    });
  });
}

void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  const char* op = "embedding_backward";
  check_defined(op, "ids", ids);
  check_dtype(op, "ids", ids, {DType::I32});
  check_ndim(op, "ids", ids, 1);
  cpu::check_f32(op, "dtable", dtable);
  check_ndim(op, "dtable", dtable, 2);
  cpu::check_fb(op, "dout", dout);
  check_shape(op, "dout", dout, Shape{ids.dim(0), dtable.dim(1)});
  if (check_same_device(op, {&ids, &dout, &dtable}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::embedding_backward(ids, dout, dtable));
    return;
  }
  int64_t N = ids.dim(0), V = dtable.dim(0), C = dtable.dim(1);
  check_ids(op, ids, V);
  const int32_t* id = ids.ptr<int32_t>();
  float* d = dtable.ptr<float>();
  cpu::visit_fb(op, "dout", dout, [&](auto* g) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) d[id[n] * C + c] += ld<float>(g[n * C + c]);
  });
}

}  // namespace pgolf::ops
