#include "eval/audit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"

namespace pgolf::eval {

namespace {

void fail(AuditReport& r, std::string line) {
  r.passed = false;
  if (r.failures.size() < 16) r.failures.push_back(std::move(line));
}

const Probe* find_probe(const EvalResult& res, int64_t t) {
  for (const auto& p : res.probes)
    if (p.position == t) return &p;
  return nullptr;
}

}  // namespace

AuditReport audit(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                  const EvalOptions& opt, const AuditOptions& aopt) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t n = static_cast<int64_t>(tokens.size());
  PG_CHECK(n >= 3, "audit: {} tokens are too few to audit", n);
  const int V = model.config().vocab_size;
  PG_CHECK(V >= 2, "audit: a vocabulary of {} leaves nothing to perturb", V);

  // Positions: the first and last targets (window edges) plus distinct random ones.
  std::vector<int64_t> pos = {1, n - 1};
  for (uint64_t i = 0; static_cast<int>(pos.size()) < aopt.samples + 2 && i < 64ull * (aopt.samples + 2); ++i) {
    const int64_t t = 1 + static_cast<int64_t>(rng::bits(aopt.seed, i).x % static_cast<uint32_t>(n - 1));
    if (std::find(pos.begin(), pos.end(), t) == pos.end()) pos.push_back(t);
  }
  std::sort(pos.begin(), pos.end());

  EvalOptions base = opt;
  base.probes = pos;
  base.stop_after_probes = false;
  base.time_budget_s = 0;
  base.keep_token_nll = false;
  const EvalResult ref = evaluate(model, tokens, luts, base);

  AuditReport rep;
  for (int64_t t : pos) {
    const Probe* p = find_probe(ref, t);
    if (!p) {
      fail(rep, fmt::format("position {}: never scored", t));
      continue;
    }
    ++rep.positions;
    double sum = 0;
    for (float lp : p->logprobs) sum += std::exp(static_cast<double>(lp));
    const double sum_err = std::abs(sum - 1.0);
    rep.max_sum_error = std::max(rep.max_sum_error, sum_err);
    if (!(sum_err <= aopt.sum_tolerance))
      fail(rep, fmt::format("position {}: the scoring distribution sums to {:.6f}, not 1", t, sum));
    const double used = -static_cast<double>(p->logprobs[tokens[static_cast<size_t>(t)]]);
    const double cons = std::abs(used - p->scored_nll);
    rep.max_consistency = std::max(rep.max_consistency, cons);
    if (!(cons <= aopt.tolerance * std::max(1.0, std::abs(used))))
      fail(rep, fmt::format("position {}: scored NLL {:.6f} but the distribution gives {:.6f}", t, p->scored_nll, used));

    // Replace every token at positions >= t by a different id and rescore up to t.
    std::vector<uint16_t> changed = tokens;
    for (int64_t u = t; u < n; ++u) {
      const uint32_t shift = 1 + rng::bits(aopt.seed ^ 0x9e3779b97f4a7c15ull, static_cast<uint64_t>(u)).x %
                                     static_cast<uint32_t>(V - 1);
      changed[static_cast<size_t>(u)] = static_cast<uint16_t>((changed[static_cast<size_t>(u)] + shift) % V);
    }
    EvalOptions one = base;
    one.probes = {t};
    one.stop_after_probes = true;
    const EvalResult alt = evaluate(model, changed, luts, one);
    const Probe* q = find_probe(alt, t);
    if (!q) {
      fail(rep, fmt::format("position {}: not scored after perturbing positions >= {}", t, t));
      continue;
    }
    double diff = 0;
    for (size_t k = 0; k < p->logprobs.size(); ++k)
      diff = std::max(diff, static_cast<double>(std::abs(p->logprobs[k] - q->logprobs[k])));
    rep.max_causal_diff = std::max(rep.max_causal_diff, diff);
    if (!(diff <= aopt.tolerance))
      fail(rep, fmt::format("position {}: the distribution changes by {:.3g} (log-prob) when tokens >= {} change", t,
                            diff, t));
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace pgolf::eval
