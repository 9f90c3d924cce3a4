// The GatedDeltaNet hybrid (TECHNIQUES.md §5.17, §5.18) on the GPU against the CPU model: one training step's
// loss and every gradient, f32 activations (tight) and bf16 (close), exact memory plan. Skipped without a GPU.
#include <gtest/gtest.h>

#include <functional>

#include "core/memory.h"
#include "model/gpt.h"
#include "model_test_util.h"
#include "ops/elementwise.h"

namespace pgolf::model {
namespace {

// head_dim 64 (the attention kernels' size; the GDN kernels' seed shape), 4 layers GDN/attn/GDN/attn(shared),
// rows of 96 tokens: one full 64-token chunk and a partial one.
ModelConfig hybrid_gpu() {
  ModelConfig c = testing::tiny_config();
  c.model_dim = 128;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.num_layers = 4;
  c.gdn_layers = "0,2";
  c.share_attention = true;
  c.unet = false;
  c.smear_gate = "v1";
  c.qk_gain_init = 5.f;
  return c;
}

void compare_with_cpu(const ModelConfig& cfg, DType act, double loss_tol, double grad_tol,
                      const std::function<void(GPT&)>& adjust = nullptr, DType cpu_act = DType::F32) {
  const Tensor ids = testing::random_ids(2, 96, cfg.vocab_size, 1);
  const Tensor targets = testing::random_ids(2, 96, cfg.vocab_size, 2);
  testing::compare_gpu_with_cpu(cfg, act, ids, targets, loss_tol, grad_tol, /*exact_plan=*/true, adjust, cpu_act);
}

// randomize() gives every matrix U(±1/sqrt(in)); through the GatedDeltaNet layers that is a chaotic regime (loss
// ≈ 27 nats at vocab 32) in which bf16 rounding alone moves gradients by 10-30 % even on the CPU (f32 vs bf16
// activations, same kernels). Scaling the GDN matrices by 0.3 gives a well-conditioned model where bf16 moves
// them by <= 8 % on the CPU, so a larger GPU difference would be a real defect.
void calm_gdn(GPT& m) {
  for (Param& p : m.params().all())
    if (p.spec.name.find(".gdn.") != std::string::npos && p.spec.group == OptGroup::Muon)
      ops::scale(p.value, 0.3f, p.value);
}

TEST(GdnHybridGpu, F32ActivationsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  compare_with_cpu(hybrid_gpu(), DType::F32, 1e-4, 5e-3);
  ModelConfig c = hybrid_gpu();  // U-Net around GDN layers, sliding window, chunk 32 (3 chunks per row)
  c.unet = true;
  c.share_attention = false;
  c.attn_window = 32;
  c.gdn_chunk = 32;
  compare_with_cpu(c, DType::F32, 1e-4, 5e-3);
}

TEST(GdnHybridGpu, Bf16ActivationsAreClose) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  // Like for like: the CPU model also rounds its activations to bf16 (on the H200 the GPU bf16 model was up to
  // 0.19 from the CPU f32 one even in the calm regime, where the CPU's own bf16/f32 difference is <= 0.08).
  compare_with_cpu(hybrid_gpu(), DType::BF16, 1e-2, 1e-1, calm_gdn, DType::BF16);
}

}  // namespace
}  // namespace pgolf::model
