// model.mlp_keep_act: keeping each MLP's activation for the backward instead of recomputing it there must give
// bit-identical losses and gradients (same ops on the same values), cost exactly one (N, hidden) buffer per MLP
// in the step's memory plan, and leave forward-only plans (evaluation) unchanged.
#include <gtest/gtest.h>

#include <string>

#include "model/gpt.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::run_step;
using testing::tiny_config;

TEST(MlpKeepAct, BitIdenticalToRecomputing) {
  const Tensor ids = random_ids(2, 12, 32, 5), targets = random_ids(2, 12, 32, 6);
  for (const bool bf16 : {false, true}) {
    for (const char* act : {"relu2", "leaky_relu2"}) {
      SCOPED_TRACE(std::string(act) + (bf16 ? " bf16" : " f32"));
      ModelConfig keep = tiny_config();
      keep.activation = act;
      if (bf16) keep.act_dtype = DType::BF16;
      ModelConfig again = keep;
      keep.mlp_keep_act = true;
      again.mlp_keep_act = false;
      GPT a(keep, Device::CPU), b(again, Device::CPU);
      randomize(a, 17);
      for (size_t i = 0; i < a.params().all().size(); ++i)
        b.params().all()[i].value.copy_from(a.params().all()[i].value);
      b.params().sync_compute();
      const testing::StepResult ra = run_step(a, ids, targets, /*exact_plan=*/true);
      const testing::StepResult rb = run_step(b, ids, targets, true);
      EXPECT_EQ(ra.loss, rb.loss);
      EXPECT_GT(ra.loss, 0.5);
      ASSERT_EQ(ra.grads.size(), rb.grads.size());
      for (size_t i = 0; i < ra.grads.size(); ++i) EXPECT_EQ(ra.grads[i], rb.grads[i]) << a.params().all()[i].spec.name;
    }
  }
}

TEST(MlpKeepAct, PlanHoldsTheKeptActivations) {
  ModelConfig keep = tiny_config();
  ModelConfig again = keep;
  keep.mlp_keep_act = true;
  again.mlp_keep_act = false;
  GPT a(keep, Device::CPU), b(again, Device::CPU);
  const int64_t B = 2, T = 12;
  const size_t per_mlp = static_cast<size_t>(B * T * keep.mlp_hidden()) * sizeof(float);
  EXPECT_GE(a.step_plan_bytes(B, T), b.step_plan_bytes(B, T) + per_mlp);
  EXPECT_EQ(a.plan_bytes(B, T, /*with_backward=*/false), b.plan_bytes(B, T, false));
}

}  // namespace
}  // namespace pgolf::model
