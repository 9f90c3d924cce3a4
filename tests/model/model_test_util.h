#pragma once
// Shared helpers of the model tests: a tiny configuration and deterministic batches/weights.
#include <cmath>
#include <vector>

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

}  // namespace pgolf::model::testing
