// The record-stack switches on the GPU against the CPU model (TECHNIQUES.md §5.7-§5.15): same loss and
// gradients with f32 activations, close with bf16 activations, exact memory plan. Skipped without a GPU.
#include <gtest/gtest.h>

#include "core/memory.h"
#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

void compare_with_cpu(const ModelConfig& cfg, DType act, double loss_tol, double grad_tol) {
  Tensor ids = testing::random_ids(2, 64, cfg.vocab_size, 1);
  for (int64_t i : {0, 17, 64 + 30}) ids.ptr<int32_t>()[i] = cfg.bos_id;  // document starts
  const Tensor targets = testing::random_ids(2, 64, cfg.vocab_size, 2);
  testing::compare_gpu_with_cpu(cfg, act, ids, targets, loss_tol, grad_tol, /*exact_plan=*/false);
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
