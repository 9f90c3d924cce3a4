// Parity with an independent PyTorch implementation of the baseline (tools/golden/make_baseline_fixture.py,
// float64): logits, loss and every gradient for one batch, and the losses of 3 optimizer steps.
// Skipped when the fixture files are absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/memory.h"
#include "model/gpt.h"
#include "model/safetensors.h"
#include "golden_util.h"
#include "model_test_util.h"
#include "train/optimizer.h"

namespace pgolf::model {
namespace {

using testing::scaled_error;

using Golden = testing::GoldenFixture;

// Fills `g` and returns true when the fixture exists; otherwise the caller skips.
bool load_golden(Golden* g) { return testing::load_golden_fixture("baseline", g); }

ModelConfig golden_config(const nlohmann::json& c) {
  ModelConfig m;
  m.vocab_size = c.at("vocab_size");
  m.num_layers = c.at("num_layers");
  m.model_dim = c.at("model_dim");
  m.num_heads = c.at("num_heads");
  m.num_kv_heads = c.at("num_kv_heads");
  m.mlp_mult = c.at("mlp_mult");
  m.rope_base = c.at("rope_base");
  m.logit_softcap = c.at("logit_softcap");
  m.norm_eps = c.at("norm_eps");
  m.act_dtype = DType::F32;
  return m;
}

double mean_loss(GPT& m, const Tensor& ids, const Tensor& targets, Arena& arena) {
  Tensor losses = Tensor::zeros(Shape{ids.numel()}, DType::F32, ids.device());
  m.forward_losses(ids, targets, arena, losses);
  double s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s / static_cast<double>(ids.numel());
}

// tol: the CPU run in f32 is observed below 1e-6 against float64; the GPU's f32 kernels (cuBLASLt, the
// f32 attention path, float atomics) get a looser bound.
void logits_loss_grads(Device dev, double tol) {
  Golden g;
  if (!load_golden(&g)) GTEST_SKIP() << "no fixture in tests/fixtures/golden (see tools/golden/README.md)";
  const ModelConfig cfg = golden_config(g.scalars.at("config"));
  GPT m(cfg, dev);
  import_params(m.params(), g.weights_path);
  m.params().sync_compute();
  const Tensor ids = g.io.at("ids").to(dev);
  const Tensor targets = g.io.at("targets").to(dev);
  const int64_t B = ids.dim(0), T = ids.dim(1), N = B * T;
  Arena arena(dev);
  arena.reserve(m.plan_bytes(B, T));

  Tensor z = Tensor::zeros(Shape{N, cfg.vocab_size}, DType::F32, dev);
  m.forward_logits(ids, arena, z);
  std::vector<float> capped = z.to_float_vector();
  for (float& v : capped) v = cfg.logit_softcap * std::tanh(v / cfg.logit_softcap);
  EXPECT_LT(scaled_error(capped, g.io.at("logits").to_float_vector()), tol);

  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32, dev);
  m.forward_backward(ids, targets, 1.f / static_cast<float>(N), arena, loss_sum);
  const double loss = loss_sum.to_float_vector()[0] / static_cast<double>(N), want = g.scalars.at("loss");
  EXPECT_NEAR(loss, want, tol * std::fabs(want));

  double worst = 0;
  std::string worst_name;
  for (const Param& p : m.params().all()) {
    auto it = g.io.find("grad." + p.spec.name);
    ASSERT_NE(it, g.io.end()) << "fixture has no gradient for " << p.spec.name;
    ASSERT_EQ(it->second.shape(), p.spec.shape) << p.spec.name;
    const double e = scaled_error(p.grad.to_float_vector(), it->second.to_float_vector());
    EXPECT_LT(e, tol) << p.spec.name;
    if (e > worst) worst = e, worst_name = p.spec.name;
  }
  std::printf("golden (%s): loss %.9f vs %.9f, worst gradient error %.2e (%s)\n", device_name(dev).data(), loss, want, worst,
              worst_name.c_str());
}

void three_steps(Device dev, double tol) {
  Golden g;
  if (!load_golden(&g)) GTEST_SKIP() << "no fixture in tests/fixtures/golden (see tools/golden/README.md)";
  const nlohmann::json& o = g.scalars.at("optimizer");
  ASSERT_EQ(o.at("lr_schedule"), "constant");
  ASSERT_FALSE(o.at("momentum_warmup").get<bool>());
  const ModelConfig cfg = golden_config(g.scalars.at("config"));
  GPT m(cfg, dev);
  import_params(m.params(), g.weights_path);
  m.params().sync_compute();

  train::OptimSection oc;
  oc.matrix_lr = o.at("matrix_lr");
  oc.scalar_lr = o.at("scalar_lr");
  oc.tied_embed_lr = o.at("tied_embed_lr");
  oc.muon_momentum = o.at("muon_momentum");
  oc.muon_momentum_warmup_steps = 0;  // the fixture uses a constant momentum
  oc.muon_backend_steps = o.at("backend_steps");
  oc.nesterov = o.at("nesterov");
  oc.beta1 = o.at("beta1");
  oc.beta2 = o.at("beta2");
  oc.adam_eps = o.at("adam_eps");
  train::Optimizer opt(m.params(), oc, dev, DType::F32);

  const Tensor ids = g.io.at("ids").to(dev);
  const Tensor targets = g.io.at("targets").to(dev);
  const int64_t N = ids.numel();
  Arena arena(dev);
  arena.reserve(m.plan_bytes(ids.dim(0), ids.dim(1)));
  const auto& want = g.scalars.at("opt_losses");
  const int steps = o.at("steps");
  ASSERT_EQ(want.size(), static_cast<size_t>(steps) + 1);
  EXPECT_NEAR(mean_loss(m, ids, targets, arena), want[0].get<double>(), tol * std::fabs(want[0].get<double>()));
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32, dev);
  for (int s = 0; s < steps; ++s) {
    m.params().zero_grads();
    m.forward_backward(ids, targets, 1.f / static_cast<float>(N), arena, loss_sum);
    opt.step(s, 1.0);
    m.params().sync_compute();
    const double w = want[static_cast<size_t>(s) + 1], got = mean_loss(m, ids, targets, arena);
    EXPECT_NEAR(got, w, 2 * tol * std::fabs(w)) << "after step " << s + 1;  // CPU: observed ~1e-7
    std::printf("golden (%s): loss after optimizer step %d: %.7f vs %.7f\n", device_name(dev).data(), s + 1, got, w);
  }
  for (const Param& p : m.params().all()) {
    double ss = 0;
    for (float v : p.value.to_float_vector()) ss += double(v) * v;
    const double w = g.scalars.at("opt_param_sumsq").at(p.spec.name);
    EXPECT_NEAR(ss, w, 10 * tol * w + 1e-9) << p.spec.name;
  }
}

bool have_gpu() { return cuda_available(); }

TEST(GoldenBaseline, LogitsLossAndGradientsMatchPyTorch) { logits_loss_grads(Device::CPU, 1e-5); }
TEST(GoldenBaseline, ThreeOptimizerStepsMatchPyTorch) { three_steps(Device::CPU, 1e-5); }

// The same fixture through the CUDA kernels (f32 activations). Skipped without a GPU.
TEST(GoldenBaselineCuda, LogitsLossAndGradientsMatchPyTorch) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  logits_loss_grads(Device::CUDA, 1e-4);
}
TEST(GoldenBaselineCuda, ThreeOptimizerStepsMatchPyTorch) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  three_steps(Device::CUDA, 1e-4);
}

}  // namespace
}  // namespace pgolf::model
