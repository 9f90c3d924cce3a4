#include "ops/reduce.h"

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;

namespace {

// Sums in double so long reductions (grad norms over millions of elements) do not drift.
template <class Fn> double reduce_all(const char* op, const Tensor& x, Fn term) {
  double acc = 0.0;
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t i = 0, n = x.numel(); i < n; ++i) acc += term(ld<double>(p[i]));
  });
  return acc;
}

void check_scalar_out(const char* op, const Tensor& x, const Tensor& out) {
  cpu::check_fb(op, "x", x);
  cpu::check_f32(op, "out", out);
  check_shape(op, "out", out, Shape{1});
}

}  // namespace

void sum(const Tensor& x, const Tensor& out, bool accumulate) {
  const char* op = "sum";
  check_scalar_out(op, x, out);
  if (check_same_device(op, {&x, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sum(x, out, accumulate));
    return;
  }
  double s = reduce_all(op, x, [](double v) { return v; });
  float* o = out.ptr<float>();
  o[0] = static_cast<float>(accumulate ? o[0] + s : s);
}

void sum_squares(const Tensor& x, const Tensor& out, bool accumulate) {
  const char* op = "sum_squares";
  check_scalar_out(op, x, out);
  if (check_same_device(op, {&x, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::sum_squares(x, out, accumulate));
    return;
  }
  double s = reduce_all(op, x, [](double v) { return v * v; });
  float* o = out.ptr<float>();
  o[0] = static_cast<float>(accumulate ? o[0] + s : s);
}

void row_sum_squares(const Tensor& x, const Tensor& out) {
  const char* op = "row_sum_squares";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  cpu::check_f32(op, "out", out);
  check_shape(op, "out", out, Shape{x.dim(0)});
  if (check_same_device(op, {&x, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::row_sum_squares(x, out));
    return;
  }
  int64_t N = x.dim(0), C = x.dim(1);
  float* o = out.ptr<float>();
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        double v = ld<double>(p[n * C + c]);
        acc += v * v;
      }
      o[n] = static_cast<float>(acc);
    }
  });
}

void col_sum_accum(const Tensor& x, const Tensor& out) {
  const char* op = "col_sum_accum";
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 2);
  cpu::check_f32(op, "out", out);
  check_shape(op, "out", out, Shape{x.dim(1)});
  if (check_same_device(op, {&x, &out}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::col_sum_accum(x, out));
    return;
  }
  int64_t N = x.dim(0), C = x.dim(1);
  std::vector<double> acc(static_cast<size_t>(C), 0.0);
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) acc[c] += ld<double>(p[n * C + c]);
  });
  float* o = out.ptr<float>();
  for (int64_t c = 0; c < C; ++c) o[c] = static_cast<float>(o[c] + acc[c]);
}

}  // namespace pgolf::ops
