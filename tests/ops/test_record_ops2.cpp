// Second batch of record-stack ops (TECHNIQUES.md §5.11, §5.14): the attention output gate and the
// sigmoid interpolation of VRL. Gradients by central finite differences on the double kernels; the
// float/bf16 tensor ops against the double ones; argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/memory.h"
#include "ops/attn_gate.h"
#include "ops/bigram.h"
#include "ops/lerp_gate.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {

TEST(OpsAttnGate, BackwardMatchesFiniteDifferences) {
  const int64_t N = 5, C = 7, H = 3, W = 4, D = 6;
  const double amp = 2.0, c = 0.7;
  auto x = randn(N * C, 1), w = randn(H * W, 2, 0.5), y = randn(N * H * D, 3), proj = randn(N * H * D, 4);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww, const std::vector<double>& yy) {
    std::vector<double> out(yy.size());
    ops::ref::attn_gate_forward(xx.data(), ww.data(), yy.data(), amp, c, out.data(), N, C, H, W, D);
    return dot(out, proj);
  };
  std::vector<double> dx(x.size()), dy(y.size()), dw(w.size(), 0.0);
  ops::ref::attn_gate_backward(x.data(), w.data(), y.data(), proj.data(), amp, c, dx.data(), dy.data(), dw.data(), N, C,
                               H, W, D);
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(a, w, y); }, x, dx, "attn_gate dx");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(x, a, y); }, w, dw, "attn_gate dw");
  expect_grad_matches_fd([&](const std::vector<double>& a) { return loss(x, w, a); }, y, dy, "attn_gate dy");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = W; j < C; ++j) EXPECT_EQ(dx[static_cast<size_t>(n * C + j)], 0.0);
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor tx = make_tensor(x, Shape{N, C}, dt), ty = make_tensor(y, Shape{N, H, D}, dt);
    Tensor tw = make_tensor(w, Shape{H, W}, DType::F32), tg = make_tensor(proj, ty.shape(), dt);
    Tensor out = Tensor::empty(ty.shape(), dt);
    ops::attn_gate_forward(tx, tw, ty, static_cast<float>(amp), static_cast<float>(c), out);
    std::vector<double> want(y.size());
    ops::ref::attn_gate_forward(to_d(tx).data(), w.data(), to_d(ty).data(), amp, c, want.data(), N, C, H, W, D);
    expect_close(to_d(out), want, tol_for(dt), "attn_gate out");
    Tensor tdx = Tensor::empty(tx.shape(), dt), tdy = Tensor::empty(ty.shape(), dt);
    Tensor tdw = make_tensor(std::vector<double>(w.size(), 1.0), tw.shape(), DType::F32);  // accumulates onto 1
    ops::attn_gate_backward(tx, tw, ty, tg, static_cast<float>(amp), static_cast<float>(c), tdx, tdy, tdw);
    std::vector<double> rdx(x.size()), rdy(y.size()), rdw(w.size(), 1.0);
    ops::ref::attn_gate_backward(to_d(tx).data(), w.data(), to_d(ty).data(), to_d(tg).data(), amp, c, rdx.data(),
                                 rdy.data(), rdw.data(), N, C, H, W, D);
    expect_close(to_d(tdx), rdx, 4 * tol_for(dt), "attn_gate dx (tensor)");
    expect_close(to_d(tdy), rdy, 4 * tol_for(dt), "attn_gate dy (tensor)");
    expect_close(to_d(tdw), rdw, 1e-4, "attn_gate dw (tensor)");
    ops::attn_gate_backward(tx, tw, ty, tg, 1.f, 1.f, Tensor(), tdy, tdw);  // dx not wanted
  }
}

TEST(OpsAttnGate, ZeroWeightsGiveTheConstantGate) {
  const int64_t N = 3, C = 4, H = 2, D = 3;
  Tensor x = rand_tensor(Shape{N, C}, DType::F32, 5), y = rand_tensor(Shape{N, H, D}, DType::F32, 6);
  Tensor w = Tensor::zeros(Shape{H, 4}, DType::F32), out = Tensor::empty(y.shape(), DType::F32);
  ops::attn_gate_forward(x, w, y, 2.f, 1.f, out);  // AttnOutGate at init: 2 sigmoid(0) = 1
  EXPECT_EQ(out.to_float_vector(), y.to_float_vector());
  ops::attn_gate_forward(x, w, y, 1.f, 0.5f, out);  // SparseAttnGate at init: 0.5
  const auto yv = y.to_float_vector(), ov = out.to_float_vector();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_FLOAT_EQ(ov[i], 0.5f * yv[i]);
}

TEST(OpsAttnGate, BadArgumentsNameTheOp) {
  Tensor x = Tensor::zeros(Shape{3, 4}, DType::F32), y = Tensor::zeros(Shape{3, 2, 5}, DType::F32);
  Tensor out = Tensor::zeros(y.shape(), DType::F32);
  expect_error_naming([&] { ops::attn_gate_forward(x, Tensor::zeros(Shape{2, 5}, DType::F32), y, 1.f, 1.f, out); },
                      "attn_gate_forward");  // window 5 > C 4
  expect_error_naming([&] { ops::attn_gate_forward(x, Tensor::zeros(Shape{3, 2}, DType::F32), y, 1.f, 1.f, out); },
                      "attn_gate_forward");  // 3 heads for y's 2
  expect_error_naming([&] { ops::attn_gate_forward(x, Tensor::zeros(Shape{2, 2}, DType::F32), y, 1.f, 1.f, y); },
                      "attn_gate_forward");  // out aliases y
}

TEST(OpsSigmoidLerp, BackwardMatchesFiniteDifferences) {
  const int64_t n = 11;
  auto x = randn(n, 7), y = randn(n, 8), proj = randn(n, 9);
  std::vector<double> a{-1.5};
  auto loss = [&](const std::vector<double>& aa, const std::vector<double>& xx, const std::vector<double>& yy) {
    std::vector<double> out(static_cast<size_t>(n));
    ops::ref::sigmoid_lerp_forward(aa[0], xx.data(), yy.data(), out.data(), n);
    return dot(out, proj);
  };
  std::vector<double> dx(x.size()), dy(y.size()), da{0.0};
  ops::ref::sigmoid_lerp_backward(a[0], x.data(), y.data(), proj.data(), dx.data(), dy.data(), da.data(), n);
  expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(v, x, y); }, a, da, "lerp da");
  expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(a, v, y); }, x, dx, "lerp dx");
  expect_grad_matches_fd([&](const std::vector<double>& v) { return loss(a, x, v); }, y, dy, "lerp dy");
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor ta = make_tensor(a, Shape{1}, DType::F32), tx = make_tensor(x, Shape{n}, dt), ty = make_tensor(y, Shape{n}, dt);
    Tensor tg = make_tensor(proj, Shape{n}, dt), out = Tensor::empty(Shape{n}, dt);
    ops::sigmoid_lerp_forward(ta, tx, ty, out);
    std::vector<double> want(x.size());
    ops::ref::sigmoid_lerp_forward(a[0], to_d(tx).data(), to_d(ty).data(), want.data(), n);
    expect_close(to_d(out), want, tol_for(dt), "lerp out");
    Tensor tdx = Tensor::empty(Shape{n}, dt), tdy = Tensor::empty(Shape{n}, dt), tda = Tensor::zeros(Shape{1}, DType::F32);
    ops::sigmoid_lerp_backward(ta, tx, ty, tg, tdx, tdy, tda);
    std::vector<double> rdx(x.size()), rdy(y.size()), rda{0.0};
    ops::ref::sigmoid_lerp_backward(a[0], to_d(tx).data(), to_d(ty).data(), to_d(tg).data(), rdx.data(), rdy.data(),
                                    rda.data(), n);
    expect_close(to_d(tdx), rdx, tol_for(dt), "lerp dx (tensor)");
    expect_close(to_d(tdy), rdy, tol_for(dt), "lerp dy (tensor)");
    expect_close(to_d(tda), rda, 1e-4, "lerp da (tensor)");
  }
  Tensor ta = Tensor::zeros(Shape{2}, DType::F32), tx = Tensor::zeros(Shape{3}, DType::F32);
  expect_error_naming([&] { ops::sigmoid_lerp_forward(ta, tx, tx, Tensor::zeros(Shape{3}, DType::F32)); },
                      "sigmoid_lerp_forward");
}

// The CUDA kernels against the CPU ops (skipped without a GPU): bf16 activations, f32 parameters.
TEST(OpsRecord2Gpu, MatchTheCpuOps) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 300, C = 64, H = 8, D = 16;
  for (int64_t W : {int64_t{12}, C}) {
    SCOPED_TRACE(W);
    Tensor x = rand_tensor(Shape{N, C}, DType::BF16, 11), y = rand_tensor(Shape{N, H, D}, DType::BF16, 12);
    Tensor w = rand_tensor(Shape{H, W}, DType::F32, 13, 0.3), g = rand_tensor(y.shape(), DType::BF16, 14);
    Tensor out = Tensor::empty(y.shape(), DType::BF16), dx = Tensor::empty(x.shape(), DType::BF16);
    Tensor dy = Tensor::empty(y.shape(), DType::BF16), dw = Tensor::zeros(w.shape(), DType::F32);
    ops::attn_gate_forward(x, w, y, 1.f, 0.5f, out);
    ops::attn_gate_backward(x, w, y, g, 1.f, 0.5f, dx, dy, dw);
    Tensor gout = Tensor::empty(y.shape(), DType::BF16, Device::CUDA), gdx = Tensor::empty(x.shape(), DType::BF16, Device::CUDA);
    Tensor gdy = Tensor::empty(y.shape(), DType::BF16, Device::CUDA), gdw = Tensor::zeros(w.shape(), DType::F32, Device::CUDA);
    const Tensor cx = x.to(Device::CUDA), cw = w.to(Device::CUDA), cy = y.to(Device::CUDA), cg = g.to(Device::CUDA);
    ops::attn_gate_forward(cx, cw, cy, 1.f, 0.5f, gout);
    ops::attn_gate_backward(cx, cw, cy, cg, 1.f, 0.5f, gdx, gdy, gdw);
    expect_close(to_d(gout.to(Device::CPU)), to_d(out), 1e-2, "attn_gate out (cuda)");
    expect_close(to_d(gdx.to(Device::CPU)), to_d(dx), 2e-2, "attn_gate dx (cuda)");
    expect_close(to_d(gdy.to(Device::CPU)), to_d(dy), 1e-2, "attn_gate dy (cuda)");
    expect_close(to_d(gdw.to(Device::CPU)), to_d(dw), 1e-3, "attn_gate dw (cuda)");
  }
  {
    const int64_t n = 5000;
    Tensor a = make_tensor(std::vector<double>{-1.5}, Shape{1}, DType::F32);
    Tensor x = rand_tensor(Shape{n}, DType::BF16, 15), y = rand_tensor(Shape{n}, DType::BF16, 16);
    Tensor g = rand_tensor(Shape{n}, DType::BF16, 17), out = Tensor::empty(Shape{n}, DType::BF16);
    Tensor dx = Tensor::empty(Shape{n}, DType::BF16), dy = Tensor::empty(Shape{n}, DType::BF16);
    Tensor da = Tensor::zeros(Shape{1}, DType::F32);
    ops::sigmoid_lerp_forward(a, x, y, out);
    ops::sigmoid_lerp_backward(a, x, y, g, dx, dy, da);
    const Tensor ca = a.to(Device::CUDA), cx = x.to(Device::CUDA), cy = y.to(Device::CUDA), cg = g.to(Device::CUDA);
    Tensor gout = Tensor::empty(Shape{n}, DType::BF16, Device::CUDA), gdx = Tensor::empty(Shape{n}, DType::BF16, Device::CUDA);
    Tensor gdy = Tensor::empty(Shape{n}, DType::BF16, Device::CUDA), gda = Tensor::zeros(Shape{1}, DType::F32, Device::CUDA);
    ops::sigmoid_lerp_forward(ca, cx, cy, gout);
    ops::sigmoid_lerp_backward(ca, cx, cy, cg, gdx, gdy, gda);
    expect_close(to_d(gout.to(Device::CPU)), to_d(out), 1e-2, "lerp out (cuda)");
    expect_close(to_d(gdx.to(Device::CPU)), to_d(dx), 1e-2, "lerp dx (cuda)");
    expect_close(to_d(gdy.to(Device::CPU)), to_d(dy), 1e-2, "lerp dy (cuda)");
    expect_close(to_d(gda.to(Device::CPU)), to_d(da), 1e-3, "lerp da (cuda)");
  }
  {
    std::vector<int32_t> v(2 * 2048);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>((i * 2654435761u) % 8192);
    const Tensor ids = Tensor::from_vector(v, Shape{2, 2048});
    Tensor out = Tensor::zeros(ids.shape(), DType::I32), gout = Tensor::zeros(ids.shape(), DType::I32, Device::CUDA);
    ops::bigram_hash(ids, 3072, out);
    ops::bigram_hash(ids.to(Device::CUDA), 3072, gout);
    const Tensor back = gout.to(Device::CPU);
    EXPECT_EQ(std::vector<int32_t>(back.ptr<int32_t>(), back.ptr<int32_t>() + back.numel()),
              std::vector<int32_t>(out.ptr<int32_t>(), out.ptr<int32_t>() + out.numel()));
    // The trigram ids (§5.9) of the same rows.
    ops::trigram_hash(ids, 3072, out);
    ops::trigram_hash(ids.to(Device::CUDA), 3072, gout);
    const Tensor back3 = gout.to(Device::CPU);
    EXPECT_EQ(std::vector<int32_t>(back3.ptr<int32_t>(), back3.ptr<int32_t>() + back3.numel()),
              std::vector<int32_t>(out.ptr<int32_t>(), out.ptr<int32_t>() + out.numel()));
  }
}

}  // namespace
