// The GPT on the GPU against the CPU reference: same loss and gradients in f32 activations, close in
// bf16 activations (bf16 compute copies), exact memory plan. Skipped without a GPU.
#include <gtest/gtest.h>


#include "core/memory.h"
#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

void compare_with_cpu(DType act, double loss_tol, double grad_tol) {
  ModelConfig cfg = testing::tiny_config();
  cfg.model_dim = 128;  // head_dim 64: the size the fused attention kernels are built for
  cfg.num_heads = 2;
  cfg.num_kv_heads = 1;
  const Tensor ids = testing::random_ids(2, 64, cfg.vocab_size, 1), targets = testing::random_ids(2, 64, cfg.vocab_size, 2);
  testing::compare_gpu_with_cpu(cfg, act, ids, targets, loss_tol, grad_tol, /*exact_plan=*/true);
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
