// A whole training step — zero grads, forward, backward, optimizer update (with grad-norm clipping or without),
// bf16 weight refresh — captured once into a CUDA graph and replayed gives the same weights as running the same steps
// eagerly. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "core/memory.h"
#include "core/stream.h"
#include "model/gpt.h"
#include "train/optimizer.h"
#include "../model/model_test_util.h"
#if PGOLF_CUDA
#include "core/cuda_check.h"
#endif

namespace pgolf::train {
namespace {

using model::GPT;

struct Rig {
  GPT model;
  Arena arena;
  Optimizer opt;
  Tensor ids, targets, loss_sum;
  Rig(const model::ModelConfig& c, const Tensor& ids_h, const Tensor& tgt_h, const OptimSection& o)
      : model(c, Device::CUDA),
        arena(Device::CUDA, "graph-test"),
        opt(model.params(), o, Device::CUDA, DType::BF16),
        ids(ids_h.to(Device::CUDA)),
        targets(tgt_h.to(Device::CUDA)),
        loss_sum(Tensor::zeros(Shape{1}, DType::F32, Device::CUDA)) {
    model::testing::randomize(model, 11);
    arena.reserve(model.plan_bytes(ids.dim(0), ids.dim(1)));
  }
  // Device work of one step (no host synchronisation, no allocation).
  void device_step() {
    model.params().zero_grads();
    model.forward_backward(ids, targets, 1.f / static_cast<float>(ids.numel()), arena, loss_sum);
    opt.apply();
    model.params().sync_compute();
  }
  std::vector<std::vector<float>> weights() {
    std::vector<std::vector<float>> w;
    for (const auto& p : model.params().all()) w.push_back(p.value.to_float_vector());
    return w;
  }
};

#if PGOLF_CUDA
void expect_replay_matches_eager(const OptimSection& o) {
  model::ModelConfig c = model::testing::tiny_config();
  c.act_dtype = DType::BF16;
  const Tensor ids = model::testing::random_ids(2, 64, c.vocab_size, 3);
  const Tensor tgt = model::testing::random_ids(2, 64, c.vocab_size, 4);
  const int kSteps = 4;

  Stream stream;
  StreamGuard guard(stream.handle());
  Rig eager(c, ids, tgt, o), graphed(c, ids, tgt, o);
  // Step 0 eagerly on both: warms the cuBLASLt algorithm cache and the attention scratch, which
  // allocate on first use and must not do so inside a capture.
  for (Rig* r : {&eager, &graphed}) {
    r->opt.set_hyperparameters(0, 1.0);
    r->device_step();
  }
  for (int s = 1; s <= kSteps; ++s) {
    eager.opt.set_hyperparameters(s, 1.0);
    eager.device_step();
  }

  cudaStream_t cs = static_cast<cudaStream_t>(stream.handle());
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  stream.synchronize();
  PG_CUDA_CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal), "beginning the capture");
  graphed.device_step();
  PG_CUDA_CHECK(cudaStreamEndCapture(cs, &graph), "ending the capture");
  PG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0), "instantiating the step graph");
  for (int s = 1; s <= kSteps; ++s) {
    graphed.opt.set_hyperparameters(s, 1.0);  // new lr/momentum go to the device tensor the graph reads
    PG_CUDA_CHECK(cudaGraphLaunch(exec, cs), "replaying the step graph");
  }
  stream.synchronize();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // Float atomics (embedding backward, column sums) may add in another order between any two runs,
  // eager or not, so compare with a tolerance far below the size of one update.
  auto a = eager.weights(), b = graphed.weights();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    double err = 0, scale = 1e-30;
    for (size_t j = 0; j < a[i].size(); ++j) {
      err = std::max(err, std::fabs(double(a[i][j]) - b[i][j]));
      scale = std::max(scale, std::fabs(double(a[i][j])));
    }
    EXPECT_LT(err / scale, 2e-3) << eager.model.params().all()[i].spec.name;
  }
  if (o.grad_clip_norm > 0) {
    // The last replay's norm (device work of the graph) is the eager run's last norm, and it did clip.
    EXPECT_NEAR(graphed.opt.grad_norm(), eager.opt.grad_norm(), 2e-3 * eager.opt.grad_norm());
    EXPECT_GT(graphed.opt.grad_norm(), o.grad_clip_norm);
  }
}
#endif

TEST(CudaGraph, CapturedTrainingStepReplaysLikeEager) {
#if PGOLF_CUDA
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  expect_replay_matches_eager(OptimSection{});
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

// The clip's norm and scale are device work inside the graph (no host read): replays clip like eager steps.
TEST(CudaGraph, CapturedStepWithGradClipReplaysLikeEager) {
#if PGOLF_CUDA
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  OptimSection o;
  o.grad_clip_norm = 1e-3;  // below the tiny model's grad norm: every step clips
  expect_replay_matches_eager(o);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace pgolf::train
