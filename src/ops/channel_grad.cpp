#include "ops/channel_grad.h"

#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

void channel_scale_backward(const Tensor& dy, const Tensor& s, const Tensor& f, const Tensor& ds, const Tensor& df,
                            bool accumulate) {
  const char* op = "channel_scale_backward";
  cpu::check_fb(op, "dy", dy);
  check_ndim(op, "dy", dy, 2);
  cpu::check_f32(op, "s", s);
  cpu::check_f32(op, "ds", ds);
  cpu::check_fb(op, "f", f);
  const int64_t N = dy.dim(0), C = dy.dim(1);
  check_shape(op, "s", s, Shape{C});
  check_shape(op, "ds", ds, Shape{C});
  check_shape(op, "f", f, dy.shape());
  if (df.defined()) {
    cpu::check_fb(op, "df", df);
    check_shape(op, "df", df, dy.shape());
    PG_CHECK(df.data() != dy.data() && df.data() != f.data(), "{}: df {} may not alias dy or f", op, df.desc());
  }
  if (check_same_device(op, {&dy, &s, &f, &ds, &df}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::channel_scale_backward(dy, s, f, ds, df, accumulate));
    return;
  }
  const float* sp = s.ptr<float>();
  std::vector<double> acc(static_cast<size_t>(C), 0.0);
  cpu::visit_fb(op, "dy", dy, [&](auto* d) {
    cpu::visit_fb(op, "f", f, [&](auto* fp) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) acc[static_cast<size_t>(c)] += ld<double>(d[n * C + c]) * ld<double>(fp[n * C + c]);
      if (!df.defined()) return;
      cpu::visit_fb(op, "df", df, [&](auto* o) {
        for (int64_t i = 0; i < N * C; ++i) {
          const float v = sp[i % C] * ld<float>(d[i]);
          st(o[i], accumulate ? ld<float>(o[i]) + v : v);
        }
      });
    });
  });
  float* dsp = ds.ptr<float>();
  for (int64_t c = 0; c < C; ++c) dsp[c] += static_cast<float>(acc[static_cast<size_t>(c)]);
}

}  // namespace pgolf::ops
