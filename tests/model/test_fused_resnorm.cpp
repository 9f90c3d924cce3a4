// model.fuse_residual_norm: the block through Tape::mix_rmsnorm / add_rmsnorm must be the function the
// separate ops compute, with the same gradients, on tiny CPU models covering the block forms it touches
// (plain, LN scale, skip gates, a loop with its embeddings, GPT-J layers, bf16 activations), and its
// measured memory plan must hold the step exactly.
#include <gtest/gtest.h>

#include <string>

#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::run_step;
using testing::scaled_error;
using testing::tiny_config;

struct Variant {
  std::string name;
  ModelConfig cfg;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"baseline", tiny_config()});
  ModelConfig c = tiny_config();
  c.ln_scale = true;
  v.push_back({"ln_scale", c});
  c = tiny_config();
  c.num_layers = 4;
  c.ln_scale = true;
  c.skip_gates = true;
  c.loop_start = 1;
  c.loop_end = 2;
  c.loop_passes = 1;
  c.loop_embeddings = true;
  v.push_back({"ln_scale+skip_gates+loop", c});
  c = tiny_config();
  c.num_layers = 4;
  c.ln_scale = true;
  c.parallel_residual = "gptj";
  c.parallel_start = 2;
  v.push_back({"gptj", c});
  c = tiny_config();
  c.ln_scale = true;
  c.act_dtype = DType::BF16;  // bf16 activations on the CPU: the GPU's rounding points
  v.push_back({"ln_scale bf16", c});
  return v;
}

// One step of the same weights with the fusion on and off. f32 without the LN scale: the CPU ops do the same float
// operations in the same order, so the results are identical; with a gain g != 1 the fused backward divides by g
// (float rounding); bf16 rounds n once instead of twice.
TEST(FusedResidualNorm, SameLossAndGradientsAsTheSeparateOps) {
  const Tensor ids = random_ids(2, 12, 32, 5), targets = random_ids(2, 12, 32, 6);
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    ModelConfig on = v.cfg, off = v.cfg;
    on.fuse_residual_norm = true;
    off.fuse_residual_norm = false;
    GPT a(on, Device::CPU), b(off, Device::CPU);
    randomize(a, 17);
    for (size_t i = 0; i < a.params().all().size(); ++i) b.params().all()[i].value.copy_from(a.params().all()[i].value);
    b.params().sync_compute();
    const testing::StepResult ra = run_step(a, ids, targets, /*exact_plan=*/true);
    const testing::StepResult rb = run_step(b, ids, targets, true);
    const bool exact = v.cfg.act_dtype == DType::F32 && !v.cfg.ln_scale;
    const double tol = v.cfg.act_dtype == DType::BF16 ? 3e-2 : 1e-5;
    if (exact)
      EXPECT_EQ(ra.loss, rb.loss);
    else
      EXPECT_NEAR(ra.loss, rb.loss, (v.cfg.act_dtype == DType::BF16 ? 1e-2 : 1e-6) * rb.loss);
    ASSERT_EQ(ra.grads.size(), rb.grads.size());
    for (size_t i = 0; i < ra.grads.size(); ++i) {
      const std::string& name = a.params().all()[i].spec.name;
      if (exact)
        EXPECT_EQ(ra.grads[i], rb.grads[i]) << name;
      else
        EXPECT_LT(scaled_error(ra.grads[i], rb.grads[i]), tol) << name;
    }
  }
}

// The fusion must change what it claims to: with it on, the plan is no larger (the LN scale's separate
// output and saved gain are gone), and the loss is not trivially the same because nothing ran.
TEST(FusedResidualNorm, PlanIsNoLargerAndStepIsReal) {
  ModelConfig c = tiny_config();
  c.ln_scale = true;
  ModelConfig off = c;
  off.fuse_residual_norm = false;
  GPT a(c, Device::CPU), b(off, Device::CPU);
  EXPECT_LT(a.step_plan_bytes(2, 12), b.step_plan_bytes(2, 12));
  randomize(a, 3);
  const testing::StepResult r = run_step(a, random_ids(2, 12, 32, 7), random_ids(2, 12, 32, 8), true);
  EXPECT_GT(r.loss, 0.5);
  double norm = 0;
  for (const auto& g : r.grads)
    for (float x : g) norm += static_cast<double>(x) * x;
  EXPECT_GT(norm, 0.0);
}

}  // namespace
}  // namespace pgolf::model
