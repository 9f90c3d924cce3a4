#pragma once
// Eval-time hash embedding (TECHNIQUES.md §8.5, PR #1460): a zero-initialised table E_h created at
// eval start (not in the artifact), added to the token embedding before the first RMSNorm,
// x_t = E[x_t] + E_h[h(x_{t-1}, x_t)], and trained only by score-first chunk TTT with a larger lr.
//
// Built from the model's own BigramHash path (§5.9, ops/bigram.h) without touching the model: a
// copy of the model with bigram_buckets = buckets and bigram_dim = d, the table zero, the projection
// the identity and the scale 1 (both frozen during TTT), so the copy's forward equals the original's
// until TTT moves the table. The hash is BigramHash's (36313 cur XOR 27191 prev mod (N - 1), row
// position 0 -> bucket N - 1), not PR #1460's (2039 prev + cur) mod N; both read only x_{t-1}, x_t.
#include <cstdint>
#include <memory>

#include "eval/ttt.h"
#include "model/gpt.h"

namespace pgolf::eval {

struct HashEmbedOptions {
  bool enabled = false;
  int64_t buckets = 16384;
  float lr_mult = 10.f;  // table lr = lr_mult x the TTT lr (§8.5: 10x)
};

// The copy of `base` with the (zero) hash embedding. Throws if `base` already has a BigramHash table.
std::unique_ptr<model::GPT> with_hash_embedding(const model::GPT& base, const HashEmbedOptions& o);

// TTT options that train the table at lr_mult x lr and freeze its projection and scale.
TttOptions hash_embed_ttt(const TttOptions& ttt, const HashEmbedOptions& o);

}  // namespace pgolf::eval
