#include "quant/clip_search.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace pgolf::quant {

std::string_view clip_search_mode_name(ClipSearchMode m) {
  switch (m) {
    case ClipSearchMode::Off: return "off";
    case ClipSearchMode::Matrix: return "matrix";
    case ClipSearchMode::Row: return "row";
  }
  return "?";
}

bool parse_clip_search_mode(std::string_view s, ClipSearchMode* out) {
  if (s == "off" || s == "none") *out = ClipSearchMode::Off;
  else if (s == "matrix") *out = ClipSearchMode::Matrix;
  else if (s == "row") *out = ClipSearchMode::Row;
  else return false;
  return true;
}

std::vector<double> row_weighted_errors(std::span<const float> w, std::span<const float> deq, int64_t rows,
                                        int64_t cols, std::span<const double> hessian) {
  PG_CHECK(static_cast<int64_t>(w.size()) == rows * cols && deq.size() == w.size(),
           "row_weighted_errors: sizes {} / {} for ({}, {})", w.size(), deq.size(), rows, cols);
  PG_CHECK(hessian.empty() || static_cast<int64_t>(hessian.size()) == cols * cols,
           "row_weighted_errors: Hessian has {} values for {} columns", hessian.size(), cols);
  std::vector<double> out(static_cast<size_t>(rows), 0.0);
  if (rows == 0 || cols == 0) return out;
  std::vector<double> e(w.size());
  for (size_t i = 0; i < w.size(); ++i) e[i] = static_cast<double>(w[i]) - static_cast<double>(deq[i]);
  if (hessian.empty()) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += e[static_cast<size_t>(r * cols + c)] * e[static_cast<size_t>(r * cols + c)];
      out[static_cast<size_t>(r)] = s;
    }
    return out;
  }
  std::vector<double> eh(w.size());
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, e.data(), static_cast<int>(cols), hessian.data(), static_cast<int>(cols), 0.0,
              eh.data(), static_cast<int>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += e[static_cast<size_t>(r * cols + c)] * eh[static_cast<size_t>(r * cols + c)];
    out[static_cast<size_t>(r)] = s;
  }
  return out;
}

namespace {

struct Candidate {
  std::string name;
  std::vector<float> clips;
  QuantizedMatrix q;
  std::vector<double> err;   // per row
  std::vector<double> bits;  // per row, code-cost proxy
};

std::vector<float> scaled(const std::vector<float>& c, double m) {
  std::vector<float> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) out[i] = static_cast<float>(static_cast<double>(c[i]) * m);
  return out;
}

bool same_rule(const ClipRule& a, const ClipRule& b) { return a.kind == b.kind && a.value == b.value; }

}  // namespace

ClipSearchOutcome clip_search(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> hessian,
                              const GptqOptions& gptq, const ClipSearchOptions& opt) {
  PG_CHECK(rows > 0 && cols > 0 && static_cast<int64_t>(w.size()) == rows * cols,
           "clip_search: {} values for a ({}, {}) matrix", w.size(), rows, cols);
  PG_CHECK(opt.rate_slack >= 0, "clip_search: rate_slack {} must be >= 0", opt.rate_slack);
  for (double m : opt.multipliers) PG_CHECK(m > 0 && std::isfinite(m), "clip_search: clip multiplier {} must be > 0", m);
  const int qm = qmax_for_bits(gptq.bits);

  // ---- candidate clip sets; the base rule first.
  std::vector<Candidate> cands;
  const std::vector<float> base_clips = row_clips(w, rows, cols, gptq.clip);
  cands.push_back({"base " + gptq.clip.describe(), base_clips, {}, {}, {}});
  if (opt.mode != ClipSearchMode::Off) {
    const bool sd = gptq.clip.kind == ClipKind::SdClip;
    const std::vector<double>& mults = sd && opt.multipliers.empty() ? kDefaultClipMultipliers : opt.multipliers;
    if (!sd) {
      for (const ClipRule& r : gptq_lite_candidates())
        if (!same_rule(r, gptq.clip)) cands.push_back({r.describe(), row_clips(w, rows, cols, r), {}, {}, {}});
    }
    for (double m : mults)
      if (m != 1.0) cands.push_back({fmt::format("x{}", m), scaled(base_clips, m), {}, {}, {}});
  }

  // ---- quantize every candidate; per-row errors.
  std::vector<float> deq(w.size());
  for (Candidate& c : cands) {
    std::vector<uint16_t> sc = scales_from_clips(c.clips, gptq.bits, gptq.min_scale);
    if (hessian.empty()) {
      c.q = quantize_rtn_with_scales(w, rows, cols, gptq.bits, std::move(sc));
    } else {
      c.q = gptq_quantize(w, rows, cols, hessian, gptq, nullptr, &sc);
    }
    dequantize_into(c.q, deq);
    c.err = row_weighted_errors(w, deq, rows, cols, hessian);
  }

  // ---- code-cost proxy from the base histogram (add-1/2 smoothing).
  std::vector<double> cost(static_cast<size_t>(2 * qm + 1));
  {
    std::vector<double> hist(cost.size(), 0.5);
    for (int8_t v : cands[0].q.codes) hist[static_cast<size_t>(v + qm)] += 1.0;
    double total = 0;
    for (double h : hist) total += h;
    for (size_t i = 0; i < cost.size(); ++i) cost[i] = -std::log2(hist[i] / total);
  }
  for (Candidate& c : cands) {
    c.bits.assign(static_cast<size_t>(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      double b = 0;
      for (int64_t j = 0; j < cols; ++j) b += cost[static_cast<size_t>(c.q.codes[static_cast<size_t>(r * cols + j)] + qm)];
      c.bits[static_cast<size_t>(r)] = b;
    }
  }

  auto total = [&](const std::vector<int>& pick, bool bits) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const Candidate& c = cands[static_cast<size_t>(pick[static_cast<size_t>(r)])];
      s += bits ? c.bits[static_cast<size_t>(r)] : c.err[static_cast<size_t>(r)];
    }
    return s;
  };

  const size_t n = cands.size();
  std::vector<int> base_pick(static_cast<size_t>(rows), 0);
  const double base_err = total(base_pick, false), base_bits = total(base_pick, true);
  const double budget = base_bits * (1.0 + opt.rate_slack);
  std::vector<int> pick = base_pick;

  if (opt.mode == ClipSearchMode::Matrix && n > 1) {
    double best = base_err;
    for (size_t k = 1; k < n; ++k) {
      std::vector<int> p(static_cast<size_t>(rows), static_cast<int>(k));
      const double e = total(p, false);
      if (opt.rate_constrained && total(p, true) > budget) continue;
      if (e < best) {
        best = e;
        pick = std::move(p);
      }
    }
  } else if (opt.mode == ClipSearchMode::Row && n > 1) {
    auto choose = [&](double lambda) {
      std::vector<int> p(static_cast<size_t>(rows), 0);
      for (int64_t r = 0; r < rows; ++r) {
        const size_t ri = static_cast<size_t>(r);
        double best = cands[0].err[ri] + lambda * cands[0].bits[ri];
        for (size_t k = 1; k < n; ++k) {
          const double v = cands[k].err[ri] + lambda * cands[k].bits[ri];
          if (v < best) {
            best = v;
            p[ri] = static_cast<int>(k);
          }
        }
      }
      return p;
    };
    if (!opt.rate_constrained) {
      pick = choose(0.0);
    } else {
      std::vector<int> p0 = choose(0.0);
      if (total(p0, true) <= budget) {
        pick = std::move(p0);
      } else {
        // Smallest λ that meets the budget: double up from a scale-aware start, then bisect (log space).
        const double scale = base_bits > 0 ? std::max(base_err, 1e-300) / base_bits : 1.0;
        double hi = scale;
        int guard = 0;
        while (total(choose(hi), true) > budget && guard++ < 200) hi *= 4.0;
        double lo = hi / 4.0;
        if (guard == 0) lo = 0.0;
        std::vector<int> best = choose(hi);
        for (int it = 0; it < 60; ++it) {
          const double mid = lo > 0 ? std::sqrt(lo * hi) : hi / 1024.0;
          if (mid <= lo || mid >= hi) break;
          std::vector<int> p = choose(mid);
          if (total(p, true) <= budget) {
            hi = mid;
            best = std::move(p);
          } else {
            lo = mid;
          }
        }
        if (total(best, true) <= budget) pick = std::move(best);
      }
    }
  }
  // Never worse than no search (and never over the rate budget when constrained).
  if (total(pick, false) > base_err || (opt.rate_constrained && total(pick, true) > budget)) pick = base_pick;

  ClipSearchOutcome out;
  out.q.rows = rows;
  out.q.cols = cols;
  out.q.bits = gptq.bits;
  out.q.codes.resize(static_cast<size_t>(rows * cols));
  out.q.scales.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const Candidate& c = cands[static_cast<size_t>(pick[static_cast<size_t>(r)])];
    std::copy_n(c.q.codes.begin() + r * cols, cols, out.q.codes.begin() + r * cols);
    out.q.scales[static_cast<size_t>(r)] = c.q.scales[static_cast<size_t>(r)];
    if (pick[static_cast<size_t>(r)] != 0) ++out.rows_changed;
  }
  out.row_candidate = pick;
  for (const Candidate& c : cands) out.candidate_names.push_back(c.name);
  out.base_error = base_err;
  out.error = total(pick, false);
  out.base_cost_bits = base_bits;
  out.cost_bits = total(pick, true);
  return out;
}

}  // namespace pgolf::quant
