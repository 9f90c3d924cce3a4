#include "quant/fake_quant.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/check.h"
#include "ops/cpu_util.h"

namespace pgolf::quant {

namespace {

using ops::cpu::ld;
using ops::cpu::st;

struct Dims {
  int64_t rows, cols;
};

Dims check_common(const char* op, const Tensor& w, const FakeQuantSpec& spec) {
  ops::cpu::check_f32(op, "w", w);
  PG_CHECK(w.ndim() >= 1 && w.dim(0) > 0, "{}: w is {}, expected a matrix with rows > 0", op, w.desc());
  PG_CHECK(spec.bits >= 2 && spec.bits <= 8, "{}: bits {} not in [2, 8]", op, spec.bits);
  PG_CHECK(spec.sd_k >= 0.f && std::isfinite(spec.sd_k), "{}: sd_k {} must be >= 0", op, spec.sd_k);
  PG_CHECK(spec.min_scale >= 0.f && std::isfinite(spec.min_scale), "{}: min_scale {} must be >= 0", op, spec.min_scale);
  return Dims{w.dim(0), w.numel() / w.dim(0)};
}

void check_scales(const char* op, const Tensor& scales, const Tensor& w, int64_t rows) {
  ops::cpu::check_f32(op, "scales", scales);
  PG_CHECK(scales.numel() == rows, "{}: scales is {}, expected {} values (one per row)", op, scales.desc(), rows);
  PG_CHECK(scales.device() == w.device(), "{}: scales is {} but w is {}", op, scales.desc(), w.desc());
}

}  // namespace

void fake_quant_forward(const Tensor& w, const Tensor& out, const FakeQuantSpec& spec, const Tensor& scales) {
  const char* op = "fake_quant_forward";
  const Dims d = check_common(op, w, spec);
  ops::cpu::check_fb(op, "out", out);
  ops::cpu::check_same_numel(op, "w", w, "out", out);
  PG_CHECK(out.data() != w.data(), "{}: out must not alias w", op);
  PG_CHECK(out.device() == w.device(), "{}: out is {} but w is {}", op, out.desc(), w.desc());
  if (scales.defined()) check_scales(op, scales, w, d.rows);
  if (w.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::fake_quant_forward(w, out, spec, scales));
    return;
  }
  const int qmax = (1 << (spec.bits - 1)) - 1;
  const float qhi = static_cast<float>(qmax), qlo = spec.symmetric ? -qhi : -qhi - 1.f;
  const float* src = w.ptr<float>();
  ops::cpu::visit_fb(op, "out", out, [&](auto* o) {
    for (int64_t r = 0; r < d.rows; ++r) {
      const float* row = src + r * d.cols;
      float clip = 0.f;
      if (spec.sd_k > 0.f) {
        double sum = 0, sum2 = 0;
        for (int64_t c = 0; c < d.cols; ++c) sum += row[c];
        const double mean = sum / static_cast<double>(d.cols);
        for (int64_t c = 0; c < d.cols; ++c) sum2 += (row[c] - mean) * (row[c] - mean);
        clip = spec.sd_k * static_cast<float>(std::sqrt(sum2 / static_cast<double>(d.cols)));
      } else {
        for (int64_t c = 0; c < d.cols; ++c) clip = std::max(clip, std::fabs(row[c]));
      }
      const float s = std::max(clip / qhi, spec.min_scale);
      if (scales.defined()) scales.ptr<float>()[r] = s;
      for (int64_t c = 0; c < d.cols; ++c) {
        float v = 0.f;
        if (s > 0.f) {
          const float q = std::nearbyint(row[c] / s);
          v = std::min(std::max(q, qlo), qhi) * s;
        }
        st(o[r * d.cols + c], v);
      }
    }
  });
}

void fake_quant_backward(const Tensor& w, const Tensor& scales, const Tensor& dout, const Tensor& dw,
                         const FakeQuantSpec& spec, bool clipped_ste) {
  const char* op = "fake_quant_backward";
  const Dims d = check_common(op, w, spec);
  ops::cpu::check_fb(op, "dout", dout);
  ops::cpu::check_fb(op, "dw", dw);
  ops::cpu::check_same_numel(op, "w", w, "dout", dout);
  ops::cpu::check_same_numel(op, "w", w, "dw", dw);
  PG_CHECK(dout.dtype() == dw.dtype() || dout.data() != dw.data(), "{}: aliased dout/dw must share a dtype", op);
  if (clipped_ste) check_scales(op, scales, w, d.rows);
  PG_CHECK(dout.device() == w.device() && dw.device() == w.device(), "{}: w {}, dout {}, dw {} on different devices",
           op, w.desc(), dout.desc(), dw.desc());
  if (w.is_cuda()) {
    PG_CUDA_DISPATCH(op, cuda::fake_quant_backward(w, scales, dout, dw, spec, clipped_ste));
    return;
  }
  const int qmax = (1 << (spec.bits - 1)) - 1;
  const float hi = static_cast<float>(qmax) + 0.5f, lo = (spec.symmetric ? -static_cast<float>(qmax) : -qmax - 1.f) - 0.5f;
  const float* src = w.ptr<float>();
  ops::cpu::visit_fb(op, "dout", dout, [&](auto* g) {
    ops::cpu::visit_fb(op, "dw", dw, [&](auto* o) {
      for (int64_t r = 0; r < d.rows; ++r) {
        const float s = clipped_ste ? scales.ptr<float>()[r] : 0.f;
        for (int64_t c = 0; c < d.cols; ++c) {
          const int64_t i = r * d.cols + c;
          float v = ld<float>(g[i]);
          if (clipped_ste && s > 0.f) {
            const float x = src[i] / s;
            if (!(x >= lo && x <= hi)) v = 0.f;
          }
          st(o[i], v);
        }
      }
    });
  });
}

}  // namespace pgolf::quant
