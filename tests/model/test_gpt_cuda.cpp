// The GPT on the GPU against the CPU reference: same loss and gradients in f32 activations, close in
// bf16 activations (bf16 compute copies), exact memory plan. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>

#include "core/memory.h"
#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

struct Result {
  double loss = 0;
  std::vector<std::vector<float>> grads;
};

Result run(GPT& m, const Tensor& ids, const Tensor& targets) {
  Arena arena(m.device());
  const size_t plan = m.plan_bytes(ids.dim(0), ids.dim(1));
  arena.reserve(plan);
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32, m.device());
  m.forward_backward(ids.to(m.device()), targets.to(m.device()), 1.f / static_cast<float>(ids.numel()), arena,
                     loss_sum);
  // The plan covers the training step and a forward-only pass on the same arena, and nothing more.
  EXPECT_EQ(plan, std::max(arena.peak(), m.plan_bytes(ids.dim(0), ids.dim(1), false)));
  Result r;
  r.loss = loss_sum.to_float_vector()[0] / static_cast<double>(ids.numel());
  for (const Param& p : m.params().all()) r.grads.push_back(p.grad.to_float_vector());
  return r;
}

double scaled_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return err / std::max(scale, 1e-30);
}

void compare_with_cpu(DType act, double loss_tol, double grad_tol) {
  ModelConfig cfg = testing::tiny_config();
  cfg.model_dim = 128;  // head_dim 64: the size the fused attention kernels are built for
  cfg.num_heads = 2;
  cfg.num_kv_heads = 1;
  GPT cpu(cfg, Device::CPU);
  testing::randomize(cpu, 21);
  cfg.act_dtype = act;
  GPT gpu(cfg, Device::CUDA);
  for (size_t i = 0; i < cpu.params().all().size(); ++i)
    gpu.params().all()[i].value.copy_from(cpu.params().all()[i].value);
  gpu.params().sync_compute();
  const Tensor ids = testing::random_ids(2, 64, cfg.vocab_size, 1), targets = testing::random_ids(2, 64, cfg.vocab_size, 2);
  const Result a = run(cpu, ids, targets), b = run(gpu, ids, targets);
  EXPECT_NEAR(b.loss, a.loss, loss_tol * a.loss);
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_LT(scaled_error(b.grads[i], a.grads[i]), grad_tol) << cpu.params().all()[i].spec.name;
}

TEST(GptCuda, F32ActivationsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  compare_with_cpu(DType::F32, 1e-4, 5e-3);  // cuBLAS may use TF32-free f32 paths; attention kernels reorder sums
}

TEST(GptCuda, Bf16ActivationsAreClose) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  compare_with_cpu(DType::BF16, 1e-2, 8e-2);
}

}  // namespace
}  // namespace pgolf::model
