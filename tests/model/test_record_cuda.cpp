// The record-stack switches on the GPU against the CPU model (TECHNIQUES.md §5.7-§5.15): same loss and
// gradients with f32 activations, close with bf16 activations, exact memory plan. Skipped without a GPU.
#include <gtest/gtest.h>

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
  EXPECT_LE(arena.peak(), plan);
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

void compare_with_cpu(ModelConfig cfg, DType act, double loss_tol, double grad_tol) {
  GPT cpu(cfg, Device::CPU);
  testing::randomize(cpu, 21);
  cfg.act_dtype = act;
  GPT gpu(cfg, Device::CUDA);
  for (size_t i = 0; i < cpu.params().all().size(); ++i)
    gpu.params().all()[i].value.copy_from(cpu.params().all()[i].value);
  gpu.params().sync_compute();
  Tensor ids = testing::random_ids(2, 64, cfg.vocab_size, 1);
  for (int64_t i : {0, 17, 64 + 30}) ids.ptr<int32_t>()[i] = cfg.bos_id;  // document starts
  const Tensor targets = testing::random_ids(2, 64, cfg.vocab_size, 2);
  const Result a = run(cpu, ids, targets), b = run(gpu, ids, targets);
  EXPECT_NEAR(b.loss, a.loss, loss_tol * a.loss);
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_LT(scaled_error(b.grads[i], a.grads[i]), grad_tol) << cpu.params().all()[i].spec.name;
}

// head_dim 64 (the fused attention kernels' size), 4 layers.
ModelConfig gpu_base() {
  ModelConfig c = testing::tiny_config();
  c.model_dim = 128;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.num_layers = 4;
  c.rope_dims = 16;
  c.activation = "leaky_relu2";
  c.ln_scale = true;
  return c;
}

std::vector<ModelConfig> stacks() {
  ModelConfig top = gpu_base();  // the top record's switches (table (d2))
  top.attn_gate = "sparse";
  top.xsa_layers = "all";
  top.doc_isolated = true;
  top.smear_gate = "v2";
  top.parallel_residual = "two_lane";
  top.parallel_start = 2;
  top.skip_gates = true;
  top.loop_start = 1;
  top.loop_end = 2;
  top.loop_passes = 1;
  ModelConfig seed915 = gpu_base();  // seed #915's (table (a))
  seed915.value_residual = true;
  seed915.ve_dim = 32;
  seed915.ve_layers = "2,3";
  seed915.smear_gate = "v1";
  seed915.bigram_buckets = 64;
  seed915.bigram_dim = 32;
  seed915.xsa_layers = "2,3";
  ModelConfig dense = gpu_base();
  dense.attn_gate = "dense";
  ModelConfig out = gpu_base();
  out.attn_gate = "out";
  out.parallel_residual = "gptj";
  out.parallel_start = 2;
  return {top, seed915, dense, out};
}

TEST(RecordCuda, F32ActivationsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  for (const ModelConfig& c : stacks()) compare_with_cpu(c, DType::F32, 1e-4, 5e-3);
}

TEST(RecordCuda, Bf16ActivationsAreClose) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  for (const ModelConfig& c : stacks()) compare_with_cpu(c, DType::BF16, 1e-2, 1e-1);
}

}  // namespace
}  // namespace pgolf::model
