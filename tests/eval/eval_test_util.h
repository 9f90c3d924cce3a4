#pragma once
// Shared fixtures of the eval tests: a tiny random CPU model, synthetic byte tables and token
// streams with documents (BOS = 1).
#include <vector>

#include "../model/model_test_util.h"
#include "core/rng.h"
#include "data/bpb.h"
#include "eval/scorer.h"
#include "model/gpt.h"

namespace pgolf::eval::testing {

constexpr int kBos = 1;

inline model::ModelConfig tiny_eval_config() {
  model::ModelConfig c = model::testing::tiny_config();  // vocab 32
  c.bos_id = kBos;
  return c;
}

inline model::GPT tiny_model(uint64_t seed = 7) {
  model::GPT m(tiny_eval_config(), Device::CPU);
  m.init(seed);
  model::testing::randomize(m, seed);
  return m;
}

// Bytes per id: BOS and id 0 are boundaries (0 bytes); others 1..4 bytes, every third with a leading space.
inline data::ByteLuts synthetic_luts(int vocab) {
  data::ByteLuts l;
  l.sp_vocab = vocab;
  l.base_bytes.assign(static_cast<size_t>(vocab), 0);
  l.has_leading_space.assign(static_cast<size_t>(vocab), 0);
  l.is_boundary.assign(static_cast<size_t>(vocab), 0);
  for (int i = 0; i < vocab; ++i) {
    if (i == 0 || i == kBos) {
      l.is_boundary[static_cast<size_t>(i)] = 1;
      continue;
    }
    l.base_bytes[static_cast<size_t>(i)] = 1 + i % 4;
    l.has_leading_space[static_cast<size_t>(i)] = i % 3 == 0;
  }
  return l;
}

// A stream opening with BOS, documents of 5..60 tokens, ids in [2, vocab).
inline std::vector<uint16_t> doc_stream(int64_t n, int vocab, uint64_t seed) {
  std::vector<uint16_t> t(static_cast<size_t>(n));
  int64_t next_bos = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto r = rng::bits(seed, static_cast<uint64_t>(i));
    if (i == next_bos) {
      t[static_cast<size_t>(i)] = kBos;
      next_bos = i + 5 + static_cast<int64_t>(r.y % 56);
    } else {
      t[static_cast<size_t>(i)] = static_cast<uint16_t>(2 + r.x % static_cast<uint32_t>(vocab - 2));
    }
  }
  return t;
}

// Per-document LoRA TTT on the tiny models: document mode, one window per `context`, rank 4 / alpha 8,
// chunks of 8 targets, 3 documents per batch; kept per-token NLLs so tests can compare scores.
inline EvalOptions lora_test_options(int64_t context, float lr) {
  EvalOptions o;
  o.mode = Mode::Doc;
  o.context = context;
  o.stride = context;
  o.batch_tokens = 256;
  o.keep_token_nll = true;
  o.lora.enabled = true;
  o.lora.rank = 4;
  o.lora.alpha = 8;
  o.lora.chunk = 8;
  o.lora.docs_per_batch = 3;
  o.lora.lr = lr;
  return o;
}

}  // namespace pgolf::eval::testing
