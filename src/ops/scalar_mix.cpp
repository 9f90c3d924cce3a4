#include "ops/scalar_mix.h"

#include <string>
#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

void check_terms(const char* op, const std::vector<MixTerm>& terms, const Tensor& like, bool backward) {
  PG_CHECK(!terms.empty() && terms.size() <= static_cast<size_t>(kMaxMixTerms), "{}: {} terms (expected 1..{})", op,
           terms.size(), kMaxMixTerms);
  for (size_t i = 0; i < terms.size(); ++i) {
    const MixTerm& m = terms[i];
    const std::string s = "s" + std::to_string(i), x = "x" + std::to_string(i);
    cpu::check_f32(op, s.c_str(), m.s);
    check_shape(op, s.c_str(), m.s, Shape{1});
    cpu::check_fb(op, x.c_str(), m.x);
    cpu::check_same_numel(op, x.c_str(), m.x, "output", like);
    PG_CHECK(m.x.data() != like.data(), "{}: {} must not alias the {}", op, x, backward ? "dout" : "output");
    if (!backward) continue;
    if (m.dx.defined()) {
      const std::string dx = "dx" + std::to_string(i);
      cpu::check_fb(op, dx.c_str(), m.dx);
      cpu::check_same_numel(op, dx.c_str(), m.dx, "dout", like);
      PG_CHECK(m.dx.data() != like.data(), "{}: {} must not alias dout", op, dx);
    }
    if (m.ds.defined()) {
      const std::string ds = "ds" + std::to_string(i);
      cpu::check_f32(op, ds.c_str(), m.ds);
      check_shape(op, ds.c_str(), m.ds, Shape{1});
    }
  }
}

Device device_of(const char* op, const std::vector<MixTerm>& terms, const Tensor& t) {
  for (const MixTerm& m : terms)
    for (const Tensor* p : {&m.s, &m.x, &m.dx, &m.ds})
      if (p->defined()) check_same_device(op, {p, &t});
  return t.device();
}

}  // namespace

void scalar_mix_forward(const std::vector<MixTerm>& terms, const Tensor& out) {
  const char* op = "scalar_mix_forward";
  cpu::check_fb(op, "out", out);
  check_terms(op, terms, out, false);
  if (device_of(op, terms, out) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::scalar_mix_forward(terms, out));
    return;
  }
  const int64_t n = out.numel();
  std::vector<float> acc(static_cast<size_t>(n), 0.f);  // f32 sum, rounded once into out
  for (const MixTerm& m : terms) {
    const float s = m.s.ptr<float>()[0];
    cpu::visit_fb(op, "x", m.x, [&](auto* x) {
      for (int64_t i = 0; i < n; ++i) acc[static_cast<size_t>(i)] += s * ld<float>(x[i]);
    });
  }
  cpu::visit_fb(op, "out", out, [&](auto* o) {
    for (int64_t i = 0; i < n; ++i) st(o[i], acc[static_cast<size_t>(i)]);
  });
}

void scalar_mix_backward(const std::vector<MixTerm>& terms, const Tensor& dout) {
  const char* op = "scalar_mix_backward";
  cpu::check_fb(op, "dout", dout);
  check_terms(op, terms, dout, true);
  if (device_of(op, terms, dout) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::scalar_mix_backward(terms, dout));
    return;
  }
  const int64_t n = dout.numel();
  cpu::visit_fb(op, "dout", dout, [&](auto* g) {
    for (const MixTerm& m : terms) {
      const float s = m.s.ptr<float>()[0];
      if (m.ds.defined()) {
        double acc = 0;
        cpu::visit_fb(op, "x", m.x, [&](auto* x) {
          for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(ld<float>(g[i])) * ld<float>(x[i]);
        });
        m.ds.ptr<float>()[0] += static_cast<float>(acc);
      }
      if (m.dx.defined())
        cpu::visit_fb(op, "dx", m.dx, [&](auto* dx) {
          for (int64_t i = 0; i < n; ++i) st(dx[i], s * ld<float>(g[i]));
        });
    }
  });
}

}  // namespace pgolf::ops
