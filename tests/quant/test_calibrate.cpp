// Hessian collection: H = XᵀX / n of each linear's inputs, through the Tape's linear-input hook.
#include <gtest/gtest.h>

#include <map>

#include "../model/model_test_util.h"
#include "core/arena.h"
#include "model/tape.h"
#include "quant/calibrate.h"

namespace pgolf::quant {
namespace {

std::vector<double> gram_by_hand(const std::vector<float>& x, int64_t n, int64_t c) {
  std::vector<double> h(static_cast<size_t>(c * c), 0.0);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += static_cast<double>(x[r * c + i]) * x[r * c + j];
      h[static_cast<size_t>(i * c + j)] = s / static_cast<double>(n);
    }
  return h;
}

class CalibratePaths : public ::testing::TestWithParam<GramPath> {};

TEST_P(CalibratePaths, OneLinearHessianIsXtXOverN) {
  const int64_t n = 5, in = 3, out = 2;
  model::ParamTable table;
  table.add(model::ParamSpec{"w", Shape{out, in}, model::OptGroup::Muon});
  table.allocate(Device::CPU, DType::F32);
  table.init(7);
  const std::vector<float> xa = {1, 2, 3, -1, 0.5f, 2, 0, 0, 1, 4, -2, 1, 0.25f, 3, -3};
  const std::vector<float> xb = {2, 1, 0, 1, 1, 1, -1, 2, 0.5f, 3, 0, -1, 1, -2, 2};
  Arena arena(Device::CPU);
  arena.reserve(1 << 16);
  HessianCollector col(GetParam());
  for (const auto* x : {&xa, &xb}) {
    col.begin_pass();
    model::Tape tp(arena, DType::F32, 1e-6f, /*record_grads=*/false);
    tp.linear(tp.constant(Tensor::from_vector(*x, Shape{n, in})), table.get("w"));
  }
  auto hs = col.finish();
  ASSERT_EQ(hs.size(), 1u);
  const LinearHessian& h = hs.at("w");
  EXPECT_EQ(h.cols, in);
  EXPECT_EQ(h.rows, 2 * n);
  std::vector<float> both = xa;
  both.insert(both.end(), xb.begin(), xb.end());
  const auto want = gram_by_hand(both, 2 * n, in);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(h.h[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << i;
  EXPECT_FALSE(model::Tape::linear_input_hook()) << "finish() must uninstall the hook";
}

INSTANTIATE_TEST_SUITE_P(Paths, CalibratePaths, ::testing::Values(GramPath::Host, GramPath::Device));

TEST(Calibrate, GptHessiansMatchCapturedInputs) {
  model::GPT gpt(model::testing::tiny_config(), Device::CPU);
  model::testing::randomize(gpt, 3);
  const int64_t B = 2, T = 8;
  const Tensor ids = model::testing::random_ids(B, T, gpt.config().vocab_size, 11);
  Arena arena(Device::CPU);
  arena.reserve(gpt.plan_bytes(B, T, false));
  Tensor losses = Tensor::empty(Shape{B * T}, DType::F32);

  // First pass: capture every linear's input by hand (raw hook).
  std::map<std::string, std::vector<float>> captured;
  std::map<std::string, int64_t> cols;
  model::Tape::linear_input_hook() = [&](const std::string& w, const Tensor& x) {
    captured[w] = x.to_float_vector();
    cols[w] = x.dim(1);
  };
  gpt.forward_losses(ids, ids, arena, losses);
  model::Tape::linear_input_hook() = nullptr;

  HessianCollector col(GramPath::Host);
  col.begin_pass();
  gpt.forward_losses(ids, ids, arena, losses);
  auto hs = col.finish();

  // Every Muon matrix and the tied embedding (LM-head input = final normed hidden state).
  for (const auto& p : gpt.params().all()) {
    if (p.spec.group == model::OptGroup::Muon || p.spec.name == "tok_emb.weight") {
      EXPECT_TRUE(hs.count(p.spec.name)) << p.spec.name;
    }
  }
  EXPECT_EQ(hs.size(), captured.size());
  EXPECT_EQ(hs.at("blocks.0.attn.c_k.weight").shared_with, "blocks.0.attn.c_q.weight");
  EXPECT_EQ(hs.at("blocks.0.attn.c_v.weight").shared_with, "blocks.0.attn.c_q.weight");
  EXPECT_EQ(hs.at("tok_emb.weight").cols, gpt.config().model_dim);
  for (const auto& [name, x] : captured) {
    const auto want = gram_by_hand(x, B * T, cols[name]);
    const LinearHessian& h = hs.at(name);
    ASSERT_EQ(h.h.size(), want.size()) << name;
    EXPECT_EQ(h.rows, B * T) << name;
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(h.h[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << name;
  }
}

TEST(Calibrate, SecondCollectorOnSameThreadIsRefused) {
  HessianCollector a;
  EXPECT_THROW(HessianCollector b, Error);
}

}  // namespace
}  // namespace pgolf::quant
