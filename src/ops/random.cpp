#include "ops/random.h"

#include "core/rng.h"
#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::st;

void fill_uniform(const Tensor& x, uint64_t seed, uint64_t offset, float lo, float hi) {
  const char* op = "fill_uniform";
  cpu::check_fb(op, "x", x);
  PG_CHECK(lo <= hi, "{}: lo {} > hi {} for {}", op, lo, hi, x.desc());
  if (x.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::fill_uniform(x, seed, offset, lo, hi));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t i = 0, n = x.numel(); i < n; ++i)
      st(p[i], rng::uniform(seed, offset + static_cast<uint64_t>(i), lo, hi));
  });
}

void fill_normal(const Tensor& x, uint64_t seed, uint64_t offset, float mean, float std) {
  const char* op = "fill_normal";
  cpu::check_fb(op, "x", x);
  PG_CHECK(std >= 0.f, "{}: std {} is negative for {}", op, std, x.desc());
  if (x.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::fill_normal(x, seed, offset, mean, std));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* p) {
    for (int64_t i = 0, n = x.numel(); i < n; ++i)
      st(p[i], mean + std * rng::normal(seed, offset + static_cast<uint64_t>(i)));
  });
}

}  // namespace pgolf::ops
