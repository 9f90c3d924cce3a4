#pragma once
// Helpers shared by the test files (tests/ is on the test target's include path).
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "data/shard.h"
#include "train/config.h"

namespace pgolf::test {

// The message of the exception `f` throws, or "" when it throws none: for checking that an error
// names the file, key or argument at fault.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// A tiny CPU training setup: a token stream with structure (token i = (i * stride + noise) % 48, noise
// uniform in [0, noise_span)), so the loss can fall, written as `<dir>/data/<prefix>_train_00000k.bin`
// shards of `train_sizes` tokens and one `<prefix>_val_000000.bin` of `val_size`; and a 2-layer,
// d = 32, seq 16 model config on the CPU reading them, with logging and periodic validation off. The
// callers set the batch, the step counts and the schedule.
inline train::Config tiny_training(const std::string& dir, const std::string& prefix, uint32_t seed, int stride,
                                   int noise_span, const std::vector<size_t>& train_sizes, size_t val_size) {
  size_t total = val_size;
  for (size_t n : train_sizes) total += n;
  std::mt19937 g(seed);
  std::vector<uint16_t> toks(total);
  for (size_t i = 0; i < toks.size(); ++i)
    toks[i] = static_cast<uint16_t>((i * static_cast<size_t>(stride) + (g() % static_cast<uint32_t>(noise_span))) % 48);
  size_t at = 0;
  for (size_t k = 0; k < train_sizes.size(); ++k) {
    data::write_shard(dir + "/data/" + prefix + "_train_00000" + std::to_string(k) + ".bin", toks.data() + at,
                      train_sizes[k]);
    at += train_sizes[k];
  }
  data::write_shard(dir + "/data/" + prefix + "_val_000000.bin", toks.data() + at, val_size);
  train::Config cfg;
  cfg.model.vocab_size = 64;
  cfg.model.num_layers = 2;
  cfg.model.model_dim = 32;
  cfg.model.num_heads = 2;
  cfg.model.num_kv_heads = 1;
  cfg.train.seq_len = 16;
  cfg.train.max_wallclock_seconds = 0;
  cfg.train.lr_schedule = "step";
  cfg.train.val_loss_every = 0;
  cfg.train.train_log_every = 0;
  cfg.train.device = "cpu";
  cfg.data.train = dir + "/data/" + prefix + "_train_*.bin";
  cfg.data.val = dir + "/data/" + prefix + "_val_*.bin";
  cfg.data.tokenizer = "";
  return cfg;
}

}  // namespace pgolf::test
