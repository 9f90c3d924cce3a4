// QAT fake quantization (quant/fake_quant.h, quant/qat.h): forward = quantize → dequantize, STE
// backward, the parameter-table API, and CUDA parity when a GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "core/memory.h"
#include "quant/fake_quant.h"
#include "quant/qat.h"
#include "quant/quantize.h"

using namespace pgolf;
using namespace pgolf::quant;

namespace {

std::vector<float> weights(int64_t rows, int64_t cols, uint32_t seed, float sd = 0.05f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& x : w) {
    x = d(g);
    if (u(g) < 0.01f) x *= 8.f;
  }
  return w;
}

// Reference: per-row scale, then codes, then dequantize (double where it does not matter).
std::vector<float> reference(const std::vector<float>& w, int64_t rows, int64_t cols, const FakeQuantSpec& s,
                             std::vector<float>* scales = nullptr) {
  const int qmax = qmax_for_bits(s.bits);
  const int qlo = s.symmetric ? -qmax : -qmax - 1;
  std::vector<float> out(w.size());
  for (int64_t r = 0; r < rows; ++r) {
    float clip = 0.f;
    if (s.sd_k > 0.f) {
      clip = row_clips(std::span<const float>(w.data() + r * cols, static_cast<size_t>(cols)), 1, cols,
                       ClipRule::sd(s.sd_k))[0];
    } else {
      for (int64_t c = 0; c < cols; ++c) clip = std::max(clip, std::fabs(w[static_cast<size_t>(r * cols + c)]));
    }
    const float sc = std::max(clip / static_cast<float>(qmax), s.min_scale);
    if (scales) scales->push_back(sc);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      long q = std::lrint(w[i] / sc);
      q = std::clamp<long>(q, qlo, qmax);
      out[i] = static_cast<float>(q) * sc;
    }
  }
  return out;
}

const FakeQuantSpec kSpecs[] = {
    FakeQuantSpec{},                       // the records': int6 [-32, 31], row max, floor 1/31
    FakeQuantSpec{6, true, 0.f, 0.f},      // symmetric, row max, no floor
    FakeQuantSpec{6, true, 12.85f, 0.f},   // the exporter's SDClip grid
    FakeQuantSpec{8, false, 3.f, 1e-4f},   // int8, tight SD clip: many saturated codes
};

}  // namespace

TEST(FakeQuant, ForwardIsQuantizeDequantize) {
  const int64_t rows = 24, cols = 80;
  const auto w = weights(rows, cols, 3);
  for (const FakeQuantSpec& s : kSpecs) {
    Tensor wt = Tensor::from_vector(w, Shape{rows, cols});
    Tensor out = Tensor::empty(Shape{rows, cols}, DType::F32);
    Tensor sc = Tensor::empty(Shape{rows}, DType::F32);
    fake_quant_forward(wt, out, s, sc);
    std::vector<float> ref_s;
    const auto ref = reference(w, rows, cols, s, &ref_s);
    const auto got = out.to_float_vector(), got_s = sc.to_float_vector();
    for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(got_s[static_cast<size_t>(r)], ref_s[static_cast<size_t>(r)],
                                                   1e-6f * ref_s[static_cast<size_t>(r)]);
    const int qmax = qmax_for_bits(s.bits), qlo = s.symmetric ? -qmax : -qmax - 1;
    for (size_t i = 0; i < w.size(); ++i) {
      const float scale = got_s[i / static_cast<size_t>(cols)];
      EXPECT_NEAR(got[i], ref[i], 1e-6f * (scale + std::fabs(ref[i]))) << i;
      const float code = got[i] / scale;  // an integer code in range
      EXPECT_NEAR(code, std::round(code), 1e-4f);
      EXPECT_GE(std::lround(code), qlo);
      EXPECT_LE(std::lround(code), qmax);
    }
    // Idempotent: quantizing the quantized weights again changes nothing when no floor applies.
    if (s.min_scale == 0.f && s.sd_k == 0.f) {
      Tensor again = Tensor::empty(Shape{rows, cols}, DType::F32);
      fake_quant_forward(out, again, s);
      const auto a = again.to_float_vector();
      for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(a[i], got[i], 1e-6f * std::fabs(got[i]) + 1e-9f);
    }
    // bf16 output is the f32 result rounded to bf16.
    Tensor outb = Tensor::empty(Shape{rows, cols}, DType::BF16);
    fake_quant_forward(wt, outb, s);
    const auto b = outb.to_float_vector();
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(b[i], bf16_to_f32(f32_to_bf16(got[i])));
  }
  // Symmetric row-max int8 with no floor equals the exporter's RTN up to its fp16 scale rounding.
  FakeQuantSpec s8{8, true, 0.f, 0.f};
  Tensor wt = Tensor::from_vector(w, Shape{rows, cols});
  Tensor out = Tensor::empty(Shape{rows, cols}, DType::F32);
  fake_quant_forward(wt, out, s8);
  const auto rtn = dequantize(quantize_rtn(w, rows, cols, 8, ClipRule::row_max()));
  const auto got = out.to_float_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    diff += (got[i] - rtn[i]) * (got[i] - rtn[i]);
    norm += w[i] * w[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 2e-3);
}

TEST(FakeQuant, SteBackward) {
  const int64_t rows = 16, cols = 64;
  const auto w = weights(rows, cols, 4);
  std::mt19937 g(9);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> go(w.size());
  for (auto& x : go) x = d(g);
  const FakeQuantSpec s{8, false, 3.f, 0.f};  // tight clip: outliers saturate
  Tensor wt = Tensor::from_vector(w, Shape{rows, cols});
  Tensor out = Tensor::empty(Shape{rows, cols}, DType::F32), sc = Tensor::empty(Shape{rows}, DType::F32);
  fake_quant_forward(wt, out, s, sc);
  Tensor dout = Tensor::from_vector(go, Shape{rows, cols});
  Tensor dw = Tensor::empty(Shape{rows, cols}, DType::F32);
  fake_quant_backward(wt, sc, dout, dw, s, false);
  EXPECT_EQ(dw.to_float_vector(), go);  // identity (the spec's W + sg(W_q − W))
  fake_quant_backward(wt, sc, dout, dw, s, true);
  const auto m = dw.to_float_vector(), scales = sc.to_float_vector();
  int inside = 0, outside = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const float x = w[i] / scales[i / static_cast<size_t>(cols)];
    if (x >= -128.5f && x <= 127.5f) {
      EXPECT_EQ(m[i], go[i]);
      ++inside;
    } else {
      EXPECT_EQ(m[i], 0.f);
      ++outside;
    }
  }
  EXPECT_GT(inside, 0);
  EXPECT_GT(outside, 0);
  // In place (dw aliases dout).
  fake_quant_backward(wt, sc, dout, dout, s, true);
  EXPECT_EQ(dout.to_float_vector(), m);
}

TEST(FakeQuant, RejectsBadArguments) {
  Tensor w = Tensor::zeros(Shape{4, 8}, DType::F32), out = Tensor::empty(Shape{4, 8}, DType::F32);
  FakeQuantSpec s;
  s.bits = 9;
  EXPECT_THROW(fake_quant_forward(w, out, s), Error);
  EXPECT_THROW(fake_quant_forward(w, w, FakeQuantSpec{}), Error);                              // aliasing
  EXPECT_THROW(fake_quant_forward(w, Tensor::empty(Shape{4, 7}, DType::F32), FakeQuantSpec{}), Error);
  EXPECT_THROW(fake_quant_forward(w, out, FakeQuantSpec{}, Tensor::empty(Shape{3}, DType::F32)), Error);
  // An all-zero row with no floor gives zeros, not NaN.
  FakeQuantSpec nofloor{6, true, 0.f, 0.f};
  fake_quant_forward(w, out, nofloor);
  for (float v : out.to_float_vector()) EXPECT_EQ(v, 0.f);
}

TEST(Qat, ParamTableApplyAndFinish) {
  model::ParamTable t;
  t.add({"blocks.0.attn.c_q.weight", Shape{8, 16}, model::OptGroup::Muon, 1.f, model::QuantRole::AttnQ});
  t.add({"blocks.0.mlp.proj.weight", Shape{16, 8}, model::OptGroup::Muon, 1.f, model::QuantRole::MlpDown});
  t.add({"tok_emb.weight", Shape{12, 8}, model::OptGroup::AdamEmbed, 1.f, model::QuantRole::Embed});
  t.add({"blocks.0.attn_scale", Shape{8}, model::OptGroup::AdamScalar, 0.f, model::QuantRole::Passthrough});
  t.allocate(Device::CPU, DType::F32);
  uint32_t seed = 1;
  for (auto& p : t.all()) {
    p.value.copy_from(Tensor::from_vector(weights(p.value.dim(0), p.value.numel() / p.value.dim(0), seed++),
                                          p.value.shape()));
    p.grad.copy_from(Tensor::from_vector(std::vector<float>(static_cast<size_t>(p.value.numel()), 1.f), p.value.shape()));
  }
  std::vector<std::vector<float>> before;
  for (auto& p : t.all()) before.push_back(p.value.to_float_vector());

  QatConfig cfg;
  cfg.enabled = true;
  EXPECT_FALSE(qat_active(cfg, 0.5));
  EXPECT_TRUE(qat_active(cfg, 0.1));
  cfg.enabled = false;
  EXPECT_FALSE(qat_active(cfg, 0.1));
  cfg.enabled = true;
  cfg.spec = FakeQuantSpec{6, true, 2.f, 0.f};  // tight clip so the clipped STE masks something
  cfg.clipped_ste = true;

  QatStash stash;
  EXPECT_EQ(apply_fake_quant(t, cfg, stash), 2u);  // the two block matrices; not the embedding or the vector
  EXPECT_THROW(apply_fake_quant(t, cfg, stash), Error);
  for (size_t i = 0; i < 2; ++i) {
    const auto& p = t.all()[i];
    const auto ref = reference(before[i], p.value.dim(0), p.value.numel() / p.value.dim(0), cfg.spec);
    const auto got = p.value.to_float_vector();
    for (size_t j = 0; j < got.size(); ++j) EXPECT_NEAR(got[j], ref[j], 1e-6f);
  }
  EXPECT_EQ(t.all()[2].value.to_float_vector(), before[2]);
  EXPECT_EQ(t.all()[3].value.to_float_vector(), before[3]);
  finish_fake_quant(t, cfg, stash);
  EXPECT_FALSE(stash.active());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(t.all()[i].value.to_float_vector(), before[i]);
  // Clipped STE masked some gradients of the fake-quantized tensors, none of the others.
  int zeros = 0;
  for (size_t i = 0; i < 2; ++i)
    for (float g : t.all()[i].grad.to_float_vector()) zeros += g == 0.f;
  EXPECT_GT(zeros, 0);
  for (size_t i = 2; i < 4; ++i)
    for (float g : t.all()[i].grad.to_float_vector()) EXPECT_EQ(g, 1.f);
}

TEST(FakeQuant, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 40, cols = 1000;
  const auto w = weights(rows, cols, 21);
  for (const FakeQuantSpec& s : kSpecs) {
    Tensor wc = Tensor::from_vector(w, Shape{rows, cols});
    Tensor oc = Tensor::empty(Shape{rows, cols}, DType::F32), sc = Tensor::empty(Shape{rows}, DType::F32);
    fake_quant_forward(wc, oc, s, sc);
    Tensor wg = wc.to(Device::CUDA);
    Tensor og = Tensor::empty(Shape{rows, cols}, DType::F32, Device::CUDA);
    Tensor sg = Tensor::empty(Shape{rows}, DType::F32, Device::CUDA);
    fake_quant_forward(wg, og, s, sg);
    const auto a = oc.to_float_vector(), b = og.to_float_vector();
    const auto as = sc.to_float_vector(), bs = sg.to_float_vector();
    int diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
    if (s.sd_k == 0.f) {
      EXPECT_EQ(as, bs);
      EXPECT_EQ(diff, 0);
    } else {
      for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(as[static_cast<size_t>(r)], bs[static_cast<size_t>(r)], 1e-6f * as[static_cast<size_t>(r)]);
      EXPECT_LE(diff, static_cast<int>(a.size() / 1000) + 2);  // a rounding tie may land differently
    }
    Tensor dg = Tensor::from_vector(std::vector<float>(a.size(), 1.f), Shape{rows, cols}, Device::CUDA);
    Tensor dwg = Tensor::empty(Shape{rows, cols}, DType::BF16, Device::CUDA);
    fake_quant_backward(wg, sg, dg, dwg, s, true);
    Tensor dcc = Tensor::from_vector(std::vector<float>(a.size(), 1.f), Shape{rows, cols});
    Tensor dwc = Tensor::empty(Shape{rows, cols}, DType::BF16);
    fake_quant_backward(wc, sc, dcc, dwc, s, true);
    if (s.sd_k == 0.f) {
      EXPECT_EQ(dwg.to_float_vector(), dwc.to_float_vector());
    }
  }
}
