#pragma once
// Eval-time mixtures on top of the model's distribution (TECHNIQUES.md §8.6, §8.7), in their legal
// form (§8.2): every mixture is a full, normalised distribution over the vocabulary, built only from
// the prefix x_0..x_{t-1}; the n-gram counts hold only targets that were already scored.
//
//   n-gram (legal variant of the seed #915 cache): p_ng(.) = count(ctx, .) / total(ctx) at the highest
//     order whose context was seen >= min_count times; p1 = (1 - a) p + a p_ng, a from the model's
//     entropy H (a = a_min + a_span * sigmoid(slope (H - center))) or fixed. Keys hold the context
//     only; the target is the value being counted, so p_ng is defined for every k and sums to 1.
//   Tap-In (V4/V6): a hint h = the continuation of the longest earlier match of the current input
//     token (within the window, else earlier in the same document), gated by the model's top-k;
//     p2 = (1 - w) p1 + w 1[k = h].
// The scorer (scorer.cpp) computes the hint and the model statistics while scoring a window, then
// walks the chunk's targets in increasing order: mix, commit the NLL, then observe(t).
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::eval {

struct NgramOptions {
  bool enabled = false;
  int min_order = 2;       // orders n: context of n - 1 tokens
  int max_order = 7;
  int min_count = 2;       // a context fires once it was seen this often
  bool alpha_entropy = true;  // a from the model entropy (seed #915); false: a = alpha_fixed
  float alpha_fixed = 0.2f;
  float alpha_min = 0.05f, alpha_span = 0.55f, entropy_center = 4.f, entropy_slope = 2.f;
};

struct TapInOptions {
  bool enabled = false;
  int min_match = 1;       // PR #1555
  int max_match = 100;
  int top_k = 1000;        // gate: the hint must be among the model's top-k ids (0 = no gate)
  float w_window = 0.01f;  // w0 of a match inside the window
  float w_cross = 0.06f;   // w0 of a match earlier in the document, before the window (V6)
  float w_max = 0.5f;
  bool cross_window = true;
};

// Throws a clear error for nonsense values (names the CLI flag).
void check_ngram_options(const NgramOptions& o);
void check_tapin_options(const TapInOptions& o);

// Exact causal n-gram counts: an open-addressing table keyed by (context hash, next token); each
// context also keeps its total, incremented together with its counts, so sum_k p_ng(k) = 1 exactly.
class NgramCache {
 public:
  explicit NgramCache(const NgramOptions& o);
  struct Query {
    int order = 0;  // 0: no order fires (p_ng undefined, the mixture is the model)
    uint64_t ctx = 0;
    uint32_t total = 0;
  };
  // Reads tokens[t - max_order + 1 .. t - 1] only.
  Query query(const uint16_t* tokens, int64_t t) const;
  double prob(const Query& q, int token) const;  // count(ctx, token) / total
  // Adds (context, tokens[t]) for every order whose context fits (call once t is scored).
  void observe(const uint16_t* tokens, int64_t t);
  float alpha(double entropy) const;
  size_t entries() const { return used_; }

 private:
  struct Slot {
    uint64_t ctx;
    uint32_t tok;
    uint32_t count;
  };
  void contexts(const uint16_t* tokens, int64_t t, uint64_t* out) const;  // out[n] for n in [min, max]
  uint32_t get(uint64_t ctx, uint32_t tok) const;
  void inc(uint64_t ctx, uint32_t tok);
  void grow();

  NgramOptions o_;
  std::vector<Slot> slots_;
  size_t used_ = 0;
};

// The Tap-In hint at target t (input token c = tokens[t-1]); reads tokens[doc_start .. t-1] only.
struct TapHint {
  int token = -1;  // -1: none
  int match = 0;   // longest match length
  int votes = 0;   // matches (>= min_match) that continue with `token`
  bool cross = false;
  double weight = 0;  // w before the gate
};

class TapIn {
 public:
  // `tokens` (n) is indexed once (positions per id); queries only look at positions < t - 1 + 1.
  TapIn(const TapInOptions& o, const uint16_t* tokens, int64_t n, int vocab);
  TapHint hint(int64_t t, int64_t window_start, int64_t doc_start) const;
  const TapInOptions& options() const { return o_; }

 private:
  TapHint search(int64_t t, int64_t lo, int64_t hi, bool cross) const;  // candidates p in [lo, hi]

  TapInOptions o_;
  const uint16_t* tokens_;
  std::vector<std::vector<int64_t>> where_;  // where_[id]: positions holding id, increasing
};

// Statistics of the model's distribution at one target (from its full log-distribution).
struct RowStats {
  double lp_target = 0;  // log p(y)
  double entropy = 0;    // nats
  int64_t hint_rank = 0; // #k with p(k) > p(h)
};
RowStats row_stats(const float* logprobs, int vocab, int target, int hint, bool need_entropy);

// One target's mixing inputs, gathered while its window is scored.
struct MixInput {
  double lp_model = 0;  // model log p(y)
  double entropy = 0;
  int hint = -1;        // after the gate
  double tap_w = 0;
};

// log p'(y) of the full mixture, from the scalars (what the scorer commits).
double mixed_logprob(double lp_model, const NgramCache* ng, const NgramCache::Query& q, double alpha, int target,
                     int hint, double tap_w);
// The whole mixed log-distribution (V) from the model's (the audit's view of the same mixture).
std::vector<float> mixed_distribution(const std::vector<float>& model_lp, const NgramCache* ng,
                                      const NgramCache::Query& q, double alpha, int hint, double tap_w);

}  // namespace pgolf::eval
