#pragma once
// Training checkpoints: everything a resumed run needs to continue bit-identically (parameters,
// optimizer states, step, loader position, RNG seed/counter, elapsed training time). One file,
// written atomically (temporary + fsync + rename), so a failed write (disk full, killed process)
// leaves the previous checkpoint intact. Layout: "PGCK" | u32 version | u64 header length |
// JSON header (tensor names, shapes, byte offsets, crc32) | raw little-endian tensor bytes.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace pgolf::train {

struct TrainState {
  int64_t step = 0;            // optimizer updates done
  double elapsed_ms = 0;       // training time so far (validation excluded)
  int64_t loader_shard = 0;    // data::TokenStream::State
  int64_t loader_pos = 0;
  uint64_t seed = 0;
  uint64_t rng_counter = 0;    // Philox offset consumed so far (for stochastic features)
  int64_t tokens_seen = 0;
  int64_t swa_count = 0;       // SWA snapshots averaged so far (train/ema.h)
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes state + tensors to `path` atomically (any device; tensors are copied to host).
void save_checkpoint(const std::string& path, const TrainState& state, const NamedTensors& tensors);
// Reads `path`, fills every tensor of `tensors` (names and shapes must match exactly; errors name
// the file and the tensor), returns the state. Weight-averaging state ("ema.*", "swa.*" tensors) is
// optional for the reader: a checkpoint may hold such tensors that `tensors` does not ask for (eval
// reading parameters only, a resume with averaging switched off); every other extra tensor is an error.
TrainState load_checkpoint(const std::string& path, const NamedTensors& tensors);

}  // namespace pgolf::train
