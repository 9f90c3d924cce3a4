// `pgolf bench attention`: speed of the fused attention kernels (each forward and backward kernel forced
// in turn), and (--check) their agreement with the CPU op on small shapes.
#include "cli/bench_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/stream.h"
#include "ops/attention.h"
#include "ops/selftest.h"
#include "ops/elementwise.h"

namespace pgolf::cli::bench {

namespace {

struct AttnTensors {
  Tensor q, k, v, out, lse, dout, dq, dk, dv, doc;
};

AttnTensors make_inputs(const AttnShape& s, DType dt, uint64_t seed) {
  AttnTensors t;
  t.q = random_cuda({s.B, s.T, s.Hq, s.D}, dt, seed);
  t.k = random_cuda({s.B, s.T, s.Hkv, s.D}, dt, seed + 1);
  t.v = random_cuda({s.B, s.T, s.Hkv, s.D}, dt, seed + 2);
  t.dout = random_cuda({s.B, s.T, s.Hq, s.D}, dt, seed + 3);
  t.out = Tensor::empty(t.q.shape(), dt, Device::CUDA);
  t.dq = Tensor::empty(t.q.shape(), dt, Device::CUDA);
  t.dk = Tensor::empty(t.k.shape(), dt, Device::CUDA);
  t.dv = Tensor::empty(t.v.shape(), dt, Device::CUDA);
  t.lse = Tensor::empty({s.B, s.Hq, s.T}, DType::F32, Device::CPU).to(Device::CUDA);
  return t;
}

// Documents of lengths cycling through 37, 300, 5, 1000, ... so blocks see every masking situation.
Tensor make_doc_start(int B, int T) {
  static const int kLens[] = {37, 300, 5, 1000, 64, 129};
  std::vector<int32_t> doc(static_cast<size_t>(B) * T);
  for (int b = 0; b < B; ++b) {
    int start = 0, next = kLens[b % 6], li = b % 6;
    for (int t = 0; t < T; ++t) {
      if (t == next) start = t, li = (li + 1) % 6, next = t + kLens[li];
      doc[static_cast<size_t>(b) * T + t] = start;
    }
  }
  return Tensor::from_vector(doc, {B, T}, Device::CUDA);
}

// max |got - ref| / max |ref| over the finite reference entries; infinities must match exactly.
double rel_error(const Tensor& got, const Tensor& ref) {
  std::vector<float> g = got.to_float_vector(), r = ref.to_float_vector();
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(r[i])) {
      if (g[i] != r[i]) return INFINITY;
      continue;
    }
    if (!std::isfinite(g[i])) return INFINITY;
    max_ref = std::max(max_ref, static_cast<double>(std::abs(r[i])));
    max_err = std::max(max_err, static_cast<double>(std::abs(g[i] - r[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

constexpr ops::AttnFwdKernel kFwdKernels[] = {ops::AttnFwdKernel::Mma, ops::AttnFwdKernel::Wgmma64,
                                               ops::AttnFwdKernel::Wgmma128};
constexpr ops::AttnBwdKernel kBwdKernels[] = {ops::AttnBwdKernel::V1, ops::AttnBwdKernel::Wgmma128,
                                               ops::AttnBwdKernel::Wgmma64, ops::AttnBwdKernel::WgmmaDqMma};

}  // namespace

std::vector<Row> bench_attention(const Options& o, const AttnShape& s) {
  PG_CHECK(s.B > 0 && s.T > 0 && s.Hq > 0 && s.Hkv > 0 && s.Hq % s.Hkv == 0 && s.D > 0,
           "bench attention: bad shape B={} T={} Hq={} Hkv={} D={}", s.B, s.T, s.Hq, s.Hkv, s.D);
  AttnTensors t = make_inputs(s, DType::BF16, 1234);
  ops::AttnParams p;
  p.causal = s.causal;
  // FLOP convention (ANCHORS.md): causal forward = 4 B Hq T^2 D / 2, backward = 2.5x forward.
  const double fwd_flop = 4.0 * s.B * s.Hq * static_cast<double>(s.T) * s.T * s.D / (s.causal ? 2.0 : 1.0);
  auto fwd = [&] { ops::attention_forward(t.q, t.k, t.v, t.doc, t.out, t.lse, p); };
  auto bwd = [&] { ops::attention_backward(t.q, t.k, t.v, t.doc, t.out, t.lse, t.dout, t.dq, t.dk, t.dv, p); };
  const std::string shape = fmt::format("B={} T={} Hq={} Hkv={} D={}{}", s.B, s.T, s.Hq, s.Hkv, s.D,
                                        s.causal ? " causal" : "");
  const bool anchor = s.B == 48 && s.T == 2048 && s.Hq == 8 && s.Hkv == 4 && s.D == 64 && s.causal;
  std::vector<Row> rows;
  double ms = median_ms(o, fwd);
  rows.push_back({"attention fwd " + shape, ms, fwd_flop / ms / 1e9, anchor ? 388.0 : 0.0, "target 430"});
  // Each forward kernel forced (ops/attention.h; a wgmma one falls back to mma.sync off compute capability 9.0).
  for (ops::AttnFwdKernel kern : kFwdKernels) {
    ops::set_attention_fwd_kernel(kern);
    const double kms = median_ms(o, fwd);
    ops::set_attention_fwd_kernel(ops::AttnFwdKernel::Auto);
    rows.push_back({std::string("attention fwd [") + ops::attn_fwd_kernel_name(kern) + "] " + shape, kms,
                    fwd_flop / kms / 1e9, anchor ? 388.0 : 0.0, ""});
  }
  fwd();
  ms = median_ms(o, bwd);
  rows.push_back({"attention bwd " + shape, ms, 2.5 * fwd_flop / ms / 1e9, 0.0, ""});
  // Each backward kernel forced (ops/attention.h; a wgmma one falls back to v1 off compute capability 9.0).
  for (ops::AttnBwdKernel kern : kBwdKernels) {
    ops::set_attention_bwd_kernel(kern);
    const double kms = median_ms(o, bwd);
    ops::set_attention_bwd_kernel(ops::AttnBwdKernel::Auto);
    rows.push_back({std::string("attention bwd [") + ops::attn_bwd_kernel_name(kern) + "] " + shape, kms,
                    2.5 * fwd_flop / kms / 1e9, 0.0, ""});
  }
  ms = median_ms(o, [&] { fwd(), bwd(); });
  rows.push_back({"attention fwd+bwd " + shape, ms, 3.5 * fwd_flop / ms / 1e9, anchor ? 319.0 : 0.0, "target 350"});
  return rows;
}

bool check_attention(const AttnShape& s, int window, bool docs, DType dt) {
  std::printf("check attention %s B=%d T=%d Hq=%d Hkv=%d D=%d%s window=%d%s (GPU vs CPU op)\n",
              std::string(dtype_name(dt)).c_str(), s.B, s.T, s.Hq, s.Hkv, s.D, s.causal ? " causal" : "", window,
              docs ? " doc_start" : "");
  AttnTensors g = make_inputs(s, dt, 99);
  if (docs) g.doc = make_doc_start(s.B, s.T);
  ops::AttnParams p;
  p.causal = s.causal, p.window = window;
  ops::attention_forward(g.q, g.k, g.v, g.doc, g.out, g.lse, p);
  device_synchronize();

  AttnTensors c;
  c.q = g.q.to(Device::CPU), c.k = g.k.to(Device::CPU), c.v = g.v.to(Device::CPU), c.dout = g.dout.to(Device::CPU);
  if (docs) c.doc = g.doc.to(Device::CPU);
  c.out = Tensor::empty(c.q.shape(), dt), c.lse = Tensor::empty(g.lse.shape(), DType::F32);
  c.dq = Tensor::empty(c.q.shape(), dt), c.dk = Tensor::empty(c.k.shape(), dt), c.dv = Tensor::empty(c.v.shape(), dt);
  ops::attention_forward(c.q, c.k, c.v, c.doc, c.out, c.lse, p);
  ops::attention_backward(c.q, c.k, c.v, c.doc, c.out, c.lse, c.dout, c.dq, c.dk, c.dv, p);

  // bf16: P and dS are rounded to bf16 inside the kernels, outputs are bf16: ~0.5% typical.
  const double tol = dt == DType::BF16 ? 2e-2 : 1e-4;
  bool ok = true;
  auto compare = [&](const char* name, const Tensor& got, const Tensor& ref) {
    const double e = rel_error(got, ref);
    const bool pass = e <= tol;
    ok = ok && pass;
    std::printf("  %-8s max rel error %.3e (tolerance %.0e) %s\n", name, e, tol, pass ? "ok" : "FAIL");
  };
  compare("out", g.out, c.out);
  compare("lse", g.lse, c.lse);
  for (Tensor* t : {&g.dq, &g.dk, &g.dv})  // NaN first, so an element the kernel misses fails
    *t = ops::selftest::Inputs::poison(t->shape(), dt).to(Device::CUDA);
  ops::attention_backward(g.q, g.k, g.v, g.doc, g.out, g.lse, g.dout, g.dq, g.dk, g.dv, p);
  device_synchronize();
  compare("dq", g.dq, c.dq);
  compare("dk", g.dk, c.dk);
  compare("dv", g.dv, c.dv);
  if (dt == DType::BF16 && s.D == 64) {  // the flash backward again with each kernel forced
    for (ops::AttnBwdKernel kern : kBwdKernels) {
      for (Tensor* t : {&g.dq, &g.dk, &g.dv}) *t = ops::selftest::Inputs::poison(t->shape(), dt).to(Device::CUDA);
      ops::set_attention_bwd_kernel(kern);
      ops::attention_backward(g.q, g.k, g.v, g.doc, g.out, g.lse, g.dout, g.dq, g.dk, g.dv, p);
      ops::set_attention_bwd_kernel(ops::AttnBwdKernel::Auto);
      device_synchronize();
      const double eq = rel_error(g.dq, c.dq), ek = rel_error(g.dk, c.dk), ev = rel_error(g.dv, c.dv);
      const bool pass = eq <= tol && ek <= tol && ev <= tol;
      ok = ok && pass;
      std::printf("  bwd [%s] dq %.3e dk %.3e dv %.3e (tolerance %.0e) %s\n", ops::attn_bwd_kernel_name(kern), eq, ek,
                  ev, tol, pass ? "ok" : "FAIL");
    }
  }
  if (dt == DType::BF16 && s.D == 64) {  // the flash forward again with each kernel forced
    for (ops::AttnFwdKernel kern : kFwdKernels) {
      ops::fill(g.out, NAN), ops::fill(g.lse, NAN);  // every element must be written again
      ops::set_attention_fwd_kernel(kern);
      ops::attention_forward(g.q, g.k, g.v, g.doc, g.out, g.lse, p);
      ops::set_attention_fwd_kernel(ops::AttnFwdKernel::Auto);
      device_synchronize();
      const double eo = rel_error(g.out, c.out), el = rel_error(g.lse, c.lse);
      const bool pass = eo <= tol && el <= tol;
      ok = ok && pass;
      std::printf("  fwd [%s] out %.3e lse %.3e (tolerance %.0e) %s\n", ops::attn_fwd_kernel_name(kern), eo, el,
                  tol, pass ? "ok" : "FAIL");
    }
  }
  return ok;
}

bool check_attention_all() {
  bool ok = true;
  ok &= check_attention({2, 300, 4, 2, 64, true}, 0, false, DType::BF16);     // flash path, GQA, ragged T
  ok &= check_attention({2, 333, 4, 1, 64, true}, 100, true, DType::BF16);   // window + documents
  ok &= check_attention({1, 200, 2, 2, 64, false}, 0, false, DType::BF16);   // non-causal
  ok &= check_attention({2, 1024, 8, 4, 64, true}, 0, false, DType::BF16);   // training T, full tiles
  ok &= check_attention({2, 77, 4, 2, 32, true}, 0, true, DType::F32);       // fallback kernels
  std::printf("attention check: %s\n", ok ? "all ok" : "FAILED");
  return ok;
}

}  // namespace pgolf::cli::bench
