// GPT::set_grad_ready (data-parallel overlap, issue 10): every parameter is reported exactly once per
// forward_backward, and at the moment it is reported its gradient already holds its final value — checked
// bit for bit against the gradient after the call, for the baseline and for the record modules that reach
// across layers (VRL, value embeddings, skip gates, two lanes, loops).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "model_test_util.h"

namespace pgolf::model {
namespace {

using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

struct Report {
  int call = 0;                          // 1-based order of the callback call
  std::vector<float> grad;               // the gradient as it was when reported
};

// Runs forward_backward twice (two micro-steps accumulate: reports must be final for the call, not the step)
// and checks the reports of the second call. Returns the number of callback calls of that call.
int check_reports(const ModelConfig& c, uint64_t seed) {
  GPT m(c, Device::CPU);
  randomize(m, seed);
  const Tensor ids = random_ids(2, 8, c.vocab_size, seed + 1), targets = random_ids(2, 8, c.vocab_size, seed + 2);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  Tensor loss = Tensor::zeros(Shape{1}, DType::F32);
  m.params().zero_grads();
  m.forward_backward(ids, targets, 1.f / 16, arena, loss);

  std::map<size_t, Report> reports;
  int calls = 0;
  auto& all = m.params().all();
  m.set_grad_ready([&](const std::vector<size_t>& ready) {
    ++calls;
    EXPECT_FALSE(ready.empty());
    for (size_t i : ready) {
      EXPECT_LT(i, all.size());
      EXPECT_EQ(reports.count(i), 0u) << all[i].spec.name << " reported twice";
      reports[i] = Report{calls, all[i].grad.to_float_vector()};
    }
  });
  m.forward_backward(ids, targets, 1.f / 16, arena, loss);
  m.set_grad_ready(nullptr);

  EXPECT_EQ(reports.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    auto it = reports.find(i);
    if (it == reports.end()) {
      ADD_FAILURE() << all[i].spec.name << " never reported";
      continue;
    }
    EXPECT_EQ(it->second.grad, all[i].grad.to_float_vector()) << all[i].spec.name << " reported before it was final";
  }
  // The blocks are reported during the backward, last block first; the rest (embedding, head, skips) last.
  const int last = c.num_layers - 1;
  const auto first_of = [&](const std::string& prefix) {
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].spec.name.rfind(prefix, 0) == 0) return reports[i].call;
    return -1;
  };
  EXPECT_LE(first_of(fmt::format("blocks.{}.", last)), first_of("blocks.0."));
  EXPECT_EQ(first_of("tok_emb"), calls);
  return calls;
}

TEST(GradReady, BaselineBlocksAreReportedOneByOneWithFinalGradients) {
  ModelConfig c = tiny_config();
  // One call per block plus the rest: the overlap has something to overlap.
  EXPECT_EQ(check_reports(c, 41), c.num_layers + 1);
}

TEST(GradReady, CrossLayerModulesStillReportFinalGradients) {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.rope_dims = 4;
  c.value_residual = true;  // layer 0's values feed every later layer
  c.ve_dim = 8;
  c.ve_layers = "2,3";
  c.skip_gates = true;
  c.ln_scale = true;
  c.attn_gate = "sparse";
  c.xsa_layers = "all";
  EXPECT_GE(check_reports(c, 42), 2);
  c.parallel_residual = "two_lane";
  c.parallel_start = 2;
  c.loop_start = 1;  // blocks 1 and 2 run twice: reported after their first (earliest) visit's backward
  c.loop_end = 2;
  c.loop_passes = 1;
  EXPECT_GE(check_reports(c, 43), 2);
}

TEST(GradReady, GdnHybridWithSharedAttentionReportsFinalGradients) {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.gdn_layers = "0,2";       // GatedDeltaNet mixers (§5.18)
  c.share_attention = true;   // blocks 1 and 3 use block 1's attention weights (§5.17)
  c.gdn_chunk = 4;
  c.unet = false;
  EXPECT_GE(check_reports(c, 47), 2);
}

TEST(GradReady, OffByDefaultAndNoEffectOnGradients) {
  ModelConfig c = tiny_config();
  GPT a(c, Device::CPU), b(c, Device::CPU);
  randomize(a, 44);
  randomize(b, 44);
  const Tensor ids = random_ids(2, 8, c.vocab_size, 45), targets = random_ids(2, 8, c.vocab_size, 46);
  Arena arena(Device::CPU);
  arena.reserve(a.plan_bytes(2, 8));
  Tensor la = Tensor::zeros(Shape{1}, DType::F32), lb = Tensor::zeros(Shape{1}, DType::F32);
  a.params().zero_grads();
  b.params().zero_grads();
  a.forward_backward(ids, targets, 1.f / 16, arena, la);
  int calls = 0;
  b.set_grad_ready([&](const std::vector<size_t>&) { ++calls; });
  b.forward_backward(ids, targets, 1.f / 16, arena, lb);
  EXPECT_GT(calls, 0);
  EXPECT_EQ(la.to_float_vector(), lb.to_float_vector());
  for (size_t i = 0; i < a.params().all().size(); ++i)
    EXPECT_EQ(a.params().all()[i].grad.to_float_vector(), b.params().all()[i].grad.to_float_vector());
}

}  // namespace
}  // namespace pgolf::model
