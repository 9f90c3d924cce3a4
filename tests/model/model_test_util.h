#pragma once
// Shared helpers of the model tests: a tiny configuration, deterministic batches/weights, and the
// GPU-against-CPU comparison of one training step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "ops/random.h"

namespace pgolf::model::testing {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 32;
  c.num_layers = 3;  // 1 encoder + 2 decoder blocks: one skip, one decoder block without
  c.model_dim = 32;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_mult = 2.f;
  return c;
}

inline Tensor random_ids(int64_t B, int64_t T, int vocab, uint64_t seed) {
  std::vector<int32_t> v(static_cast<size_t>(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(rng::bits(seed, i).x % static_cast<uint32_t>(vocab));
  return Tensor::from_vector(v, Shape{B, T});
}

// Every parameter random and non-zero (unlike the real init, where W_o = W_2 = 0 blocks the
// gradient of everything upstream), so every gradient path carries signal.
inline void randomize(GPT& m, uint64_t seed) {
  auto& ps = m.params().all();
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = ps[i];
    const uint64_t off = static_cast<uint64_t>(i) << 32;
    if (p.spec.name == "tok_emb.weight") {
      ops::fill_normal(p.value, seed, off, 0.f, 1.f);
    } else if (p.spec.group == OptGroup::Muon) {
      const float b = 1.f / std::sqrt(static_cast<float>(p.value.dim(1)));
      ops::fill_uniform(p.value, seed, off, -b, b);
    } else {
      const float center = p.spec.name.find("q_gain") != std::string::npos ? 1.5f : 1.f;
      ops::fill_normal(p.value, seed, off, center, 0.1f);
      if (p.spec.name.find("resid_mix") != std::string::npos)
        ops::fill_normal(p.value.slice(1, 2), seed, off + 1000, 0.f, 0.3f);
    }
  }
  m.params().sync_compute();
}

// max |a - b| / max |b|: the error relative to the tensor's scale (elementwise relative error is
// meaningless for entries near zero).
inline double scaled_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return err / std::max(scale, 1e-30);
}

struct StepResult {
  double loss = 0;
  std::vector<std::vector<float>> grads;
};

// One forward_backward on an arena of exactly plan_bytes (the step must fit in it), mean loss and
// every gradient. With `exact_plan`, the plan must also be exactly the larger of the step's peak and
// a forward-only pass's (nothing over-reserved).
inline StepResult run_step(GPT& m, const Tensor& ids, const Tensor& targets, bool exact_plan) {
  Arena arena(m.device());
  const size_t plan = m.plan_bytes(ids.dim(0), ids.dim(1));
  arena.reserve(plan);
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32, m.device());
  m.forward_backward(ids.to(m.device()), targets.to(m.device()), 1.f / static_cast<float>(ids.numel()), arena,
                     loss_sum);
  EXPECT_LE(arena.peak(), plan);
  if (exact_plan) {
    EXPECT_EQ(plan, std::max(arena.peak(), m.plan_bytes(ids.dim(0), ids.dim(1), false)));
  }
  StepResult r;
  r.loss = loss_sum.to_float_vector()[0] / static_cast<double>(ids.numel());
  for (const Param& p : m.params().all()) r.grads.push_back(p.grad.to_float_vector());
  return r;
}

// The same weights on the CPU (f32) and on the GPU (activations `act`): one step's loss within
// loss_tol (relative) and every gradient within grad_tol (scaled_error).
// `adjust` (optional) edits the randomized CPU weights before they are copied to the GPU; `cpu_act` (default f32)
// is the CPU model's activation dtype (BF16: the same rounding points as the GPU model, like for like).
inline void compare_gpu_with_cpu(ModelConfig cfg, DType act, const Tensor& ids, const Tensor& targets, double loss_tol,
                                 double grad_tol, bool exact_plan, const std::function<void(GPT&)>& adjust = nullptr,
                                 DType cpu_act = DType::F32) {
  ModelConfig cpu_cfg = cfg;
  cpu_cfg.act_dtype = cpu_act;
  GPT cpu(cpu_cfg, Device::CPU);
  randomize(cpu, 21);
  if (adjust) {
    adjust(cpu);
    cpu.params().sync_compute();
  }
  cfg.act_dtype = act;
  GPT gpu(cfg, Device::CUDA);
  for (size_t i = 0; i < cpu.params().all().size(); ++i)
    gpu.params().all()[i].value.copy_from(cpu.params().all()[i].value);
  gpu.params().sync_compute();
  const StepResult a = run_step(cpu, ids, targets, exact_plan), b = run_step(gpu, ids, targets, exact_plan);
  EXPECT_NEAR(b.loss, a.loss, loss_tol * a.loss);
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_LT(scaled_error(b.grads[i], a.grads[i]), grad_tol) << cpu.params().all()[i].spec.name;
}


// A fixed batch for whole-model finite-difference checks.
struct LossBatch {
  Tensor ids, targets;
};

// Mean next-token loss of the model on the batch (forward only, f32 CPU model).
inline double mean_loss(GPT& m, const LossBatch& b, Arena& arena) {
  Tensor losses = Tensor::zeros(Shape{b.ids.numel()}, DType::F32);
  m.forward_losses(b.ids, b.targets, arena, losses);
  double s = 0;
  for (float v : losses.to_float_vector()) s += v;
  return s / static_cast<double>(b.ids.numel());
}

// Whole-model finite differences of the mean loss for the two largest gradient entries and one arbitrary entry
// of every parameter (f32 CPU model), step h: three-point central differences, or five-point (error O(h^4)) where
// the loss is curved enough that the three-point O(h^2) error shows. Tolerance 3e-2 relative + 3e-4 absolute.
// Returns the number of mismatches (each also reported as a test failure); *checked counts the entries.
inline int check_gradients_fd(GPT& m, const LossBatch& b, int* checked, float h, bool five_point) {
  const int64_t B = b.ids.dim(0), T = b.ids.dim(1), N = b.ids.numel();
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(B, T));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(b.ids, b.targets, 1.f / static_cast<float>(N), arena, loss_sum);
  int failures = 0;
  for (Param& p : m.params().all()) {
    const auto grad = p.grad.to_float_vector();
    float* w = p.value.ptr<float>();
    std::vector<size_t> order(grad.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    const size_t top = std::min<size_t>(2, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
                      [&](size_t a, size_t c) { return std::fabs(grad[a]) > std::fabs(grad[c]); });
    std::vector<size_t> picks(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top));
    picks.push_back(grad.size() / 3);
    for (size_t i : picks) {
      const float saved = w[i];
      auto at = [&](float x) {
        w[i] = x;
        return mean_loss(m, b, arena);
      };
      const double d1 = at(saved + h) - at(saved - h);
      const double d2 = five_point ? at(saved + 2 * h) - at(saved - 2 * h) : 0.0;
      w[i] = saved;
      const double fd = five_point ? (8.0 * d1 - d2) / (12.0 * static_cast<double>(h)) : d1 / (2.0 * h);
      const double an = grad[i];
      ++*checked;
      if (std::fabs(fd - an) > 3e-2 * std::fabs(an) + 3e-4) {
        ++failures;
        ADD_FAILURE() << p.spec.name << "[" << i << "]: analytic " << an << " vs finite difference " << fd;
      }
    }
  }
  return failures;
}

}  // namespace pgolf::model::testing
