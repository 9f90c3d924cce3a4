#include "eval/mixer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace pgolf::eval {

namespace {

constexpr uint32_t kTotal = 0xffffffffu;  // the slot holding a context's total

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

size_t slot_of(uint64_t ctx, uint32_t tok, size_t mask) {
  return static_cast<size_t>(mix64(ctx ^ (static_cast<uint64_t>(tok) * 0x9e3779b97f4a7c15ull))) & mask;
}

}  // namespace

void check_ngram_options(const NgramOptions& o) {
  if (!o.enabled) return;
  PG_CHECK(o.min_order >= 2 && o.min_order <= o.max_order && o.max_order <= 16,
           "eval: n-gram orders [{}, {}] must satisfy 2 <= --ngram-min-order <= --ngram-max-order <= 16", o.min_order,
           o.max_order);
  PG_CHECK(o.min_count >= 1, "eval: --ngram-min-count {} must be >= 1", o.min_count);
  if (o.alpha_entropy) {
    PG_CHECK(o.alpha_min >= 0.f && o.alpha_span >= 0.f && o.alpha_min + o.alpha_span < 1.f,
             "eval: n-gram alpha range [{}, {}] must lie in [0, 1)", o.alpha_min, o.alpha_min + o.alpha_span);
  } else {
    PG_CHECK(o.alpha_fixed > 0.f && o.alpha_fixed < 1.f, "eval: --ngram-alpha {} must be in (0, 1) or 'entropy'",
             o.alpha_fixed);
  }
}

void check_tapin_options(const TapInOptions& o) {
  if (!o.enabled) return;
  PG_CHECK(o.min_match >= 1 && o.min_match <= o.max_match,
           "eval: Tap-In match lengths must satisfy 1 <= --tapin-min-match ({}) <= --tapin-max-match ({})", o.min_match,
           o.max_match);
  PG_CHECK(o.top_k >= 0, "eval: --tapin-top-k {} must be >= 0 (0 = no gate)", o.top_k);
  PG_CHECK(o.w_window >= 0.f && o.w_cross >= 0.f && o.w_max > 0.f && o.w_max < 1.f,
           "eval: Tap-In weights (window {}, cross {}, max {}) must be >= 0 with 0 < max < 1", o.w_window, o.w_cross,
           o.w_max);
}

// ---------------------------------------------------------------- n-gram cache

NgramCache::NgramCache(const NgramOptions& o) : o_(o) { slots_.assign(size_t{1} << 16, Slot{0, 0, 0}); }

void NgramCache::contexts(const uint16_t* tokens, int64_t t, uint64_t* out) const {
  uint64_t h = 0x51ed270b27a2b4a9ull;
  for (int n = 2; n <= o_.max_order; ++n) {
    const int64_t p = t - (n - 1);  // the context gains tokens[p]
    if (p < 0) {
      out[n] = 0;
      continue;
    }
    h = mix64(h ^ ((static_cast<uint64_t>(tokens[p]) << 8) | static_cast<uint64_t>(n)));
    out[n] = h | 1;  // 0 marks an empty slot
  }
}

uint32_t NgramCache::get(uint64_t ctx, uint32_t tok) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = slot_of(ctx, tok, mask);; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.ctx == 0) return 0;
    if (s.ctx == ctx && s.tok == tok) return s.count;
  }
}

void NgramCache::inc(uint64_t ctx, uint32_t tok) {
  if (2 * (used_ + 1) > slots_.size()) grow();
  const size_t mask = slots_.size() - 1;
  for (size_t i = slot_of(ctx, tok, mask);; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.ctx == 0) {
      s = Slot{ctx, tok, 1};
      ++used_;
      return;
    }
    if (s.ctx == ctx && s.tok == tok) {
      ++s.count;
      return;
    }
  }
}

void NgramCache::grow() {
  std::vector<Slot> old(slots_.size() * 2, Slot{0, 0, 0});
  old.swap(slots_);
  const size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.ctx == 0) continue;
    size_t i = slot_of(s.ctx, s.tok, mask);
    while (slots_[i].ctx != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

NgramCache::Query NgramCache::query(const uint16_t* tokens, int64_t t) const {
  uint64_t ctx[17];
  contexts(tokens, t, ctx);
  for (int n = o_.max_order; n >= o_.min_order; --n) {
    if (ctx[n] == 0) continue;
    const uint32_t total = get(ctx[n], kTotal);
    if (total >= static_cast<uint32_t>(o_.min_count)) return Query{n, ctx[n], total};
  }
  return Query{};
}

double NgramCache::prob(const Query& q, int token) const {
  if (q.order == 0 || q.total == 0) return 0.0;
  return static_cast<double>(get(q.ctx, static_cast<uint32_t>(token))) / static_cast<double>(q.total);
}

void NgramCache::observe(const uint16_t* tokens, int64_t t) {
  uint64_t ctx[17];
  contexts(tokens, t, ctx);
  for (int n = o_.min_order; n <= o_.max_order; ++n) {
    if (ctx[n] == 0) continue;
    inc(ctx[n], tokens[t]);
    inc(ctx[n], kTotal);
  }
}

float NgramCache::alpha(double entropy) const {
  if (!o_.alpha_entropy) return o_.alpha_fixed;
  const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(o_.entropy_slope) * (entropy - o_.entropy_center)));
  return static_cast<float>(o_.alpha_min + o_.alpha_span * s);
}

// ---------------------------------------------------------------- Tap-In

TapIn::TapIn(const TapInOptions& o, const uint16_t* tokens, int64_t n, int vocab)
    : o_(o), tokens_(tokens), where_(static_cast<size_t>(vocab)) {
  for (int64_t p = 0; p < n; ++p) {
    PG_CHECK(tokens[p] < vocab, "tapin: token {} at {} is outside the vocabulary of {}", tokens[p], p, vocab);
    where_[tokens[p]].push_back(p);
  }
}

TapHint TapIn::search(int64_t t, int64_t lo, int64_t hi, bool cross) const {
  TapHint best;
  if (hi < lo) return best;
  const int64_t cur = t - 1;  // the current input position
  const auto& pos = where_[tokens_[cur]];
  struct Cand {
    int token, votes, match;
  };
  std::vector<Cand> cands;
  // Candidates p in [lo, hi] holding the current input token; newest first.
  auto end = std::upper_bound(pos.begin(), pos.end(), hi);
  auto begin = std::lower_bound(pos.begin(), pos.end(), lo);
  for (auto it = end; it != begin;) {
    const int64_t p = *--it;
    int ml = 0;
    while (ml < o_.max_match && p - ml >= lo && tokens_[p - ml] == tokens_[cur - ml]) ++ml;
    if (ml < o_.min_match) continue;
    const int next = tokens_[p + 1];  // p + 1 <= t - 1: the continuation is in the prefix
    auto c = std::find_if(cands.begin(), cands.end(), [&](const Cand& x) { return x.token == next; });
    if (c == cands.end()) {
      cands.push_back(Cand{next, 1, ml});
    } else {
      ++c->votes;
      c->match = std::max(c->match, ml);
    }
  }
  for (const Cand& c : cands)  // longest match wins, then more votes; ties keep the newest
    if (best.token < 0 || c.match > best.match || (c.match == best.match && c.votes > best.votes))
      best = TapHint{c.token, c.match, c.votes, cross, 0.0};
  if (best.token >= 0) {
    const double w0 = cross ? o_.w_cross : o_.w_window;
    best.weight = std::min<double>(o_.w_max, w0 * (1.0 + 0.15 * (best.match - o_.min_match)) *
                                                 (1.0 + 0.2 * std::log(std::max(best.votes, 1))));
  }
  return best;
}

TapHint TapIn::hint(int64_t t, int64_t window_start, int64_t doc_start) const {
  PG_CHECK(t >= 1 && window_start <= t - 1 && doc_start <= t - 1, "tapin: target {} outside window {} / document {}",
           t, window_start, doc_start);
  // Within the window: p in [window_start, t - 2] (p + 1 < t).
  TapHint h = search(t, window_start, t - 2, false);
  if (h.token < 0 && o_.cross_window && doc_start < window_start)
    h = search(t, doc_start, std::min(window_start - 1, t - 2), true);
  return h;
}

// ---------------------------------------------------------------- mixing

RowStats row_stats(const float* lp, int vocab, int target, int hint, bool need_entropy) {
  RowStats r;
  r.lp_target = lp[target];
  if (need_entropy) {
    double h = 0;
    for (int k = 0; k < vocab; ++k) h -= std::exp(static_cast<double>(lp[k])) * static_cast<double>(lp[k]);
    r.entropy = h;
  }
  if (hint >= 0) {
    const float v = lp[hint];
    int64_t above = 0;
    for (int k = 0; k < vocab; ++k) above += lp[k] > v ? 1 : 0;
    r.hint_rank = above;
  }
  return r;
}

double mixed_logprob(double lp_model, const NgramCache* ng, const NgramCache::Query& q, double alpha, int target,
                     int hint, double tap_w) {
  double p = std::exp(lp_model);
  if (ng && q.order > 0) p = (1.0 - alpha) * p + alpha * ng->prob(q, target);
  if (hint >= 0 && tap_w > 0) p = (1.0 - tap_w) * p + (target == hint ? tap_w : 0.0);
  return std::log(p);
}

std::vector<float> mixed_distribution(const std::vector<float>& model_lp, const NgramCache* ng,
                                      const NgramCache::Query& q, double alpha, int hint, double tap_w) {
  std::vector<float> out(model_lp.size());
  for (size_t k = 0; k < model_lp.size(); ++k)
    out[k] = static_cast<float>(
        mixed_logprob(model_lp[k], ng, q, alpha, static_cast<int>(k), hint, tap_w));
  return out;
}

}  // namespace pgolf::eval
