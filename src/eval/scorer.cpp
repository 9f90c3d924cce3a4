#include "eval/scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "core/arena.h"
#include "core/error.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"

namespace pgolf::eval {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The scored NLL after a test leak's transform (identity for legal scoring).
double leaked_nll(TestLeak leak, double nll) {
  if (leak != TestLeak::MixTarget && leak != TestLeak::UnnormalizedBlend) return nll;
  return -std::log(0.5 * std::exp(-nll) + 0.5);
}

// Feeds windows to the model in batches; owns the device buffers and the arena.
class WindowRunner {
 public:
  WindowRunner(model::GPT& model, const std::vector<uint16_t>& tokens, const EvalOptions& opt, size_t extra_plan)
      : model_(model), tokens_(tokens), opt_(opt), arena_(model.device(), "eval arena") {
    rows_max_ = std::max<int64_t>(1, opt_.batch_tokens / opt_.context);
    const Device dev = model_.device();
    ids_ = Tensor::empty(Shape{rows_max_ * opt_.context}, DType::I32, dev);
    targets_ = Tensor::empty(Shape{rows_max_ * opt_.context}, DType::I32, dev);
    losses_ = Tensor::empty(Shape{rows_max_ * opt_.context}, DType::F32, dev);
    host_ids_.resize(static_cast<size_t>(rows_max_ * opt_.context));
    host_targets_.resize(host_ids_.size());
    size_t plan = model_.plan_bytes(rows_max_, opt_.context, /*with_backward=*/false);
    if (!opt_.probes.empty()) plan = std::max(plan, model_.plan_bytes(1, opt_.context, false));
    // forward_logits allocates what forward_losses does minus the loss vector; keep a margin.
    arena_.reserve(std::max(plan, extra_plan) + plan / 8 + (1 << 20));
  }

  int64_t rows_max() const { return rows_max_; }
  Arena& arena() { return arena_; }

  // Per-token losses (rows * row_len, row-major) for windows ws[0..n).
  std::vector<float> losses(const Window* ws, int64_t n, int64_t row_len) {
    fill_rows(ws, n, row_len);
    const Shape sh{n, row_len};
    Tensor ids = ids_.slice(0, n * row_len).view(sh), targets = targets_.slice(0, n * row_len).view(sh);
    ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
    targets.copy_from(Tensor::from_blob(host_targets_.data(), sh, DType::I32, Device::CPU));
    Tensor losses = losses_.slice(0, n * row_len);
    model_.forward_losses(ids, targets, arena_, losses);
    return losses.to_float_vector();
  }

  // The full log-distribution (V) the window uses at its row `row` (forward_logits + soft-cap log-softmax).
  std::vector<float> distribution(const Window& w, int64_t row) {
    const int V = model_.config().vocab_size;
    fill_rows(&w, 1, w.len);
    const Shape sh{1, w.len};
    Tensor ids = ids_.slice(0, w.len).view(sh);
    ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
    Tensor logits = Tensor::empty(Shape{w.len, V}, model_.config().act_dtype, model_.device());
    model_.forward_logits(ids, arena_, logits);
    Tensor logits32 = Tensor::empty(Shape{w.len, V}, DType::F32, model_.device());
    ops::copy(logits, logits32);
    ops::softcap_log_softmax(logits32, model_.config().logit_softcap, logits32);
    std::vector<float> lp = logits32.slice(row, row + 1).to_float_vector();
    if (opt_.leak == TestLeak::MixTarget || opt_.leak == TestLeak::UnnormalizedBlend) {
      const int y = tokens_[static_cast<size_t>(w.start + row + 1)];
      for (int k = 0; k < V; ++k) {
        const double p = 0.5 * std::exp(static_cast<double>(lp[k]));
        const double extra = opt_.leak == TestLeak::UnnormalizedBlend ? 0.5 : (k == y ? 0.5 : 0.0);
        lp[k] = static_cast<float>(std::log(p + extra));
      }
    }
    return lp;
  }

 private:
  void fill_rows(const Window* ws, int64_t n, int64_t row_len) {
    const bool see_target = opt_.leak == TestLeak::InputSeesTarget;
    for (int64_t r = 0; r < n; ++r) {
      const Window& w = ws[r];
      for (int64_t i = 0; i < row_len; ++i) {
        const size_t k = static_cast<size_t>(r * row_len + i);
        if (i >= w.len) {  // padding after the window: causal attention keeps it out of every scored row
          host_ids_[k] = 0;
          host_targets_[k] = -1;
          continue;
        }
        const size_t t = static_cast<size_t>(w.start + i + 1);  // target position of row i
        host_ids_[k] = see_target ? tokens_[t] : tokens_[t - 1];
        host_targets_[k] = tokens_[t];
      }
    }
  }

  model::GPT& model_;
  const std::vector<uint16_t>& tokens_;
  const EvalOptions& opt_;
  Arena arena_;
  int64_t rows_max_ = 1;
  Tensor ids_, targets_, losses_;
  std::vector<int32_t> host_ids_, host_targets_;
};

void check_inputs(const model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                  const EvalOptions& opt) {
  const int V = model.config().vocab_size;
  PG_CHECK(opt.context > 0 && opt.stride > 0 && opt.stride <= opt.context,
           "eval: context {} and stride {} must satisfy 0 < stride <= context", opt.context, opt.stride);
  PG_CHECK(opt.batch_tokens > 0, "eval: batch_tokens {} must be positive", opt.batch_tokens);
  PG_CHECK(tokens.size() >= 2, "eval: {} tokens leave nothing to score", tokens.size());
  PG_CHECK(luts.base_bytes.size() >= static_cast<size_t>(V),
           "eval: the byte tables have {} entries but the model vocabulary is {}", luts.base_bytes.size(), V);
  for (size_t i = 0; i < tokens.size(); ++i)
    PG_CHECK(tokens[i] < V, "eval: token {} at position {} is outside the model vocabulary of {}", tokens[i], i, V);
  for (int64_t p : opt.probes)
    PG_CHECK(p >= 1 && p < static_cast<int64_t>(tokens.size()), "eval: probe position {} is not a target in [1, {})",
             p, tokens.size());
  if (opt.ttt.enabled) PG_CHECK(opt.ttt.chunk_tokens > 0, "eval: ttt chunk_tokens {} must be > 0", opt.ttt.chunk_tokens);
}

}  // namespace

EvalResult evaluate(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                    const EvalOptions& opt) {
  check_inputs(model, tokens, luts, opt);
  const auto t_start = Clock::now();
  const int64_t n = static_cast<int64_t>(tokens.size());
  EvalResult res;
  res.stream_targets = n - 1;

  // --- prepare: windows, chunk groups, buffers.
  std::vector<Window> windows =
      build_windows(opt.mode, tokens.data(), n, opt.context, opt.stride, model.config().bos_id);
  res.total_windows = static_cast<int64_t>(windows.size());
  const int64_t chunk_tokens = opt.ttt.enabled ? opt.ttt.chunk_tokens : n;
  // Windows are in increasing first_target order; group them by the chunk of their first scored target.
  std::vector<std::pair<size_t, size_t>> groups;  // [begin, end) into windows
  for (size_t i = 0; i < windows.size();) {
    const int64_t c = (windows[i].first_target() - 1) / chunk_tokens;
    size_t j = i;
    while (j < windows.size() && (windows[j].first_target() - 1) / chunk_tokens == c) ++j;
    groups.emplace_back(i, j);
    i = j;
  }
  // Inside a group every window sees the same weights, so order is free: longest first packs
  // variable-length document windows into tight batches.
  for (auto [b, e] : groups)
    std::stable_sort(windows.begin() + static_cast<std::ptrdiff_t>(b), windows.begin() + static_cast<std::ptrdiff_t>(e),
                     [](const Window& a, const Window& w) { return a.len > w.len; });

  std::unique_ptr<SgdAdapter> adapter;
  std::unique_ptr<WeightSnapshot> snapshot;
  const int64_t train_len = opt.ttt.seq_len > 0 ? opt.ttt.seq_len : opt.context;
  if (opt.ttt.enabled) {
    adapter = std::make_unique<SgdAdapter>(model, opt.ttt, train_len);
    snapshot = std::make_unique<WeightSnapshot>(model);
  }
  WindowRunner runner(model, tokens, opt, adapter ? adapter->plan_bytes() : 0);
  if (opt.keep_token_nll) {
    res.token_nll.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
    res.score_count.assign(static_cast<size_t>(n), 0);
  }
  std::vector<int64_t> pending = opt.probes;
  std::sort(pending.begin(), pending.end());
  pending.erase(std::unique(pending.begin(), pending.end()), pending.end());
  const double t_prepare = seconds_since(t_start);

  // --- score (and adapt between chunks).
  double t_score = 0, t_adapt = 0;
  auto over_budget = [&] { return opt.time_budget_s > 0 && seconds_since(t_start) > opt.time_budget_s; };
  bool stop = false;
  for (size_t g = 0; g < groups.size() && !stop; ++g) {
    if (adapter && opt.leak == TestLeak::TrainBeforeScore) {  // illegal on purpose (auditor tests only)
      int64_t first = n, end = 0;
      for (size_t i = groups[g].first; i < groups[g].second; ++i) {
        first = std::min(first, windows[i].first_target());
        end = std::max(end, windows[i].end_target());
      }
      adapter->train(tokens.data(), first, end, opt.ttt.lr, runner.arena());
    }
    const auto ts = Clock::now();
    ChunkScore chunk;
    chunk.first_target = std::numeric_limits<int64_t>::max();
    for (size_t b = groups[g].first; b < groups[g].second && !stop;) {
      const int64_t nb = std::min<int64_t>(runner.rows_max(), static_cast<int64_t>(groups[g].second - b));
      const Window* ws = windows.data() + b;
      int64_t row_len = 0;
      for (int64_t r = 0; r < nb; ++r) row_len = std::max(row_len, ws[r].len);
      const std::vector<float> losses = runner.losses(ws, nb, row_len);
      for (int64_t r = 0; r < nb; ++r) {
        const Window& w = ws[r];
        double nll = 0;
        for (int64_t i = w.score_from; i < w.len; ++i) {
          const double l = leaked_nll(opt.leak, losses[static_cast<size_t>(r * row_len + i)]);
          nll += l;
          const int64_t t = w.start + i + 1;
          if (opt.keep_token_nll) {
            res.token_nll[static_cast<size_t>(t)] = static_cast<float>(l);
            ++res.score_count[static_cast<size_t>(t)];
          }
          auto it = std::lower_bound(pending.begin(), pending.end(), t);
          if (it != pending.end() && *it == t) {
            res.probes.push_back(Probe{t, runner.distribution(w, i), l});
            pending.erase(it);
          }
        }
        chunk.acc.add(nll, w.scored(), data::count_scored_bytes(luts, tokens.data(), w.first_target(), w.end_target()));
        chunk.first_target = std::min(chunk.first_target, w.first_target());
        chunk.end_target = std::max(chunk.end_target, w.end_target());
      }
      res.windows += nb;
      b += static_cast<size_t>(nb);
      if (over_budget() || (opt.stop_after_probes && !opt.probes.empty() && pending.empty())) stop = true;
    }
    t_score += seconds_since(ts);
    res.acc.merge(chunk.acc);
    if (chunk.acc.tokens > 0) res.chunks.push_back(chunk);
    if (stop) break;
    PG_CHECK(chunk.end_target - chunk.first_target == chunk.acc.tokens,
             "eval: chunk {} scored {} targets but spans [{}, {}) (windows not contiguous)", g, chunk.acc.tokens,
             chunk.first_target, chunk.end_target);
    if (adapter && g + 1 < groups.size() && opt.leak != TestLeak::TrainBeforeScore) {
      const auto ta = Clock::now();
      // Score first: every target trained on here was added to the total above, with the old weights.
      adapter->train(tokens.data(), chunk.first_target, chunk.end_target,
                     ttt_chunk_lr(opt.ttt, static_cast<int64_t>(g), static_cast<int64_t>(groups.size())),
                     runner.arena());
      t_adapt += seconds_since(ta);
      if (over_budget()) stop = true;
    }
  }
  res.partial = res.windows < res.total_windows;
  if (adapter) {
    res.ttt_steps = adapter->steps();
    snapshot->restore(model);
  }
  res.phase_seconds = {{"prepare", t_prepare}, {"score", t_score}, {"adapt", t_adapt}};
  return res;
}

}  // namespace pgolf::eval
