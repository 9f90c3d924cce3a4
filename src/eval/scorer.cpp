#include "eval/scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "core/arena.h"
#include "core/error.h"
#include "dist/comm.h"
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
  // Only the rows some window scores go through the head: the last `tail` rows of every row, tail = the
  // longest scored stretch (a sliding window scores its last `stride` rows; rows before it get NaN here and are
  // never read).
  std::vector<float> losses(const Window* ws, int64_t n, int64_t row_len) {
    fill_rows(ws, n, row_len);
    const Shape sh{n, row_len};
    Tensor ids = ids_.slice(0, n * row_len).view(sh);
    ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
    int64_t tail = 1;
    for (int64_t r = 0; r < n; ++r) tail = std::max(tail, row_len - ws[r].score_from);
    if (tail >= row_len) {
      Tensor targets = targets_.slice(0, n * row_len).view(sh);
      targets.copy_from(Tensor::from_blob(host_targets_.data(), sh, DType::I32, Device::CPU));
      Tensor losses = losses_.slice(0, n * row_len);
      model_.forward_losses(ids, targets, arena_, losses);
      return losses.to_float_vector();
    }
    std::vector<int32_t> tail_targets(static_cast<size_t>(n * tail));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < tail; ++i)
        tail_targets[static_cast<size_t>(r * tail + i)] = host_targets_[static_cast<size_t>(r * row_len + row_len - tail + i)];
    const Shape tsh{n, tail};
    Tensor targets = targets_.slice(0, n * tail).view(tsh);
    targets.copy_from(Tensor::from_blob(tail_targets.data(), tsh, DType::I32, Device::CPU));
    Tensor losses = losses_.slice(0, n * tail);
    model_.forward_losses_tail(ids, targets, tail, arena_, losses);
    const std::vector<float> got = losses.to_float_vector();
    std::vector<float> out(static_cast<size_t>(n * row_len), std::numeric_limits<float>::quiet_NaN());
    for (int64_t r = 0; r < n; ++r)
      std::copy(got.begin() + r * tail, got.begin() + (r + 1) * tail, out.begin() + r * row_len + row_len - tail);
    return out;
  }

  // The model's log-distributions (scored rows of every window, in order; sum of scored x V) for
  // windows ws[0..n): forward_logits, the scored rows gathered, soft-cap log-softmax.
  std::vector<float> scored_logprobs(const Window* ws, int64_t n, int64_t row_len) {
    const int V = model_.config().vocab_size;
    fill_rows(ws, n, row_len);
    const Shape sh{n, row_len};
    Tensor ids = ids_.slice(0, n * row_len).view(sh);
    ids.copy_from(Tensor::from_blob(host_ids_.data(), sh, DType::I32, Device::CPU));
    if (!logits_.defined()) {
      logits_ = Tensor::empty(Shape{rows_max_ * opt_.context, V}, model_.config().act_dtype, model_.device());
      scored_ = Tensor::empty(Shape{rows_max_ * opt_.context, V}, DType::F32, model_.device());
    }
    Tensor logits = logits_.slice(0, n * row_len);
    model_.forward_logits(ids, arena_, logits);
    int64_t off = 0;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t a = r * row_len + ws[r].score_from, b = r * row_len + ws[r].len;
      ops::copy(logits.slice(a, b), scored_.slice(off, off + (b - a)));
      off += b - a;
    }
    Tensor lp = scored_.slice(0, off);
    ops::softcap_log_softmax(lp, model_.config().logit_softcap, lp);
    return lp.to_float_vector();
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
  Tensor logits_, scored_;  // scored_logprobs (allocated on first use)
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
  if (opt.phased.enabled)
    PG_CHECK(opt.phased.chunk_tokens > 0, "eval: phased ttt chunk_tokens {} must be > 0", opt.phased.chunk_tokens);
  check_ngram_options(opt.ngram);
  check_tapin_options(opt.tapin);
  PG_CHECK(!((opt.ngram.enabled || opt.tapin.enabled) &&
             (opt.leak == TestLeak::MixTarget || opt.leak == TestLeak::UnnormalizedBlend)),
           "eval: test leaks that rewrite the scored NLL do not combine with n-gram / Tap-In mixing");
  if (opt.comm && opt.comm->world() > 1) {
    const int w = opt.comm->world();
    PG_CHECK(!opt.ngram.enabled && !opt.tapin.enabled,
             "eval: n-gram / Tap-In mixing cannot be split over ranks yet (the walk commits targets in stream order "
             "on one process); run it with one rank (world {})", w);
    PG_CHECK(!opt.phased.enabled, "eval: phased global TTT cannot be split over ranks yet; run it with one rank "
             "(world {})", w);
    PG_CHECK(opt.probes.empty() && !opt.keep_token_nll && !opt.stop_after_probes,
             "eval: probes and per-token NLL (audit, tests) need one rank (world {})", w);
    PG_CHECK(opt.leak == TestLeak::None, "eval: test leaks run on one rank only");
    PG_CHECK(!(opt.ttt.enabled && opt.comm->name() == "loopback" && model.device() != Device::CPU),
             "eval: TTT over the loopback communicator needs a CPU model (--device cpu)");
  }
}

}  // namespace

EvalResult evaluate(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                    const EvalOptions& opt) {
  check_inputs(model, tokens, luts, opt);
  if (opt.lora.enabled) return evaluate_lora(model, tokens, luts, opt);  // per-document LoRA TTT (lora_ttt.cpp)
  const auto t_start = Clock::now();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int V = model.config().vocab_size;
  const int bos = model.config().bos_id;
  EvalResult res;
  res.stream_targets = n - 1;

  // --- prepare: windows, chunk groups, buffers.
  std::vector<Window> windows = build_windows(opt.mode, tokens.data(), n, opt.context, opt.stride, bos);
  res.total_windows = static_cast<int64_t>(windows.size());
  const int64_t chunk_tokens = opt.ttt.enabled ? opt.ttt.chunk_tokens : n;
  const std::vector<int64_t> phase_ends =
      opt.phased.enabled ? phase_boundaries(opt.phased, tokens.data(), n, bos) : std::vector<int64_t>{};
  // A window belongs to the phase whose end its first scored target has not reached.
  auto phase_of = [&](int64_t first_target) {
    return static_cast<int64_t>(std::upper_bound(phase_ends.begin(), phase_ends.end(), first_target) -
                                phase_ends.begin());
  };
  // Windows are in increasing first_target order; group them by the chunk of their first scored
  // target and by phase. `chunk` is the ordinal of the TTT chunk (for its lr).
  struct Group {
    size_t begin, end;
    int64_t chunk, phase;
  };
  std::vector<Group> groups;
  int64_t num_chunks = 0;
  for (size_t i = 0; i < windows.size();) {
    const int64_t c = (windows[i].first_target() - 1) / chunk_tokens, ph = phase_of(windows[i].first_target());
    if (groups.empty() || (windows[groups.back().begin].first_target() - 1) / chunk_tokens != c) ++num_chunks;
    size_t j = i;
    while (j < windows.size() && (windows[j].first_target() - 1) / chunk_tokens == c &&
           phase_of(windows[j].first_target()) == ph)
      ++j;
    groups.push_back(Group{i, j, num_chunks - 1, ph});
    i = j;
  }
  // Inside a group every window sees the same weights, so order is free: longest first packs
  // variable-length document windows into tight batches.
  for (const Group& gr : groups)
    std::stable_sort(windows.begin() + static_cast<std::ptrdiff_t>(gr.begin),
                     windows.begin() + static_cast<std::ptrdiff_t>(gr.end),
                     [](const Window& a, const Window& w) { return a.len > w.len; });

  std::unique_ptr<SgdAdapter> adapter, global;
  std::unique_ptr<WeightSnapshot> snapshot;
  size_t extra_plan = 0;
  if (opt.ttt.enabled) {
    adapter = std::make_unique<SgdAdapter>(model, opt.ttt, opt.ttt.seq_len > 0 ? opt.ttt.seq_len : opt.context,
                                           opt.comm);
    extra_plan = adapter->plan_bytes();
  }
  if (opt.phased.enabled) {
    global = std::make_unique<SgdAdapter>(model, opt.phased.as_ttt(),
                                          opt.phased.seq_len > 0 ? opt.phased.seq_len : opt.context);
    extra_plan = std::max(extra_plan, global->plan_bytes());
  }
  if (adapter || global) snapshot = std::make_unique<WeightSnapshot>(model);
  WindowRunner runner(model, tokens, opt, extra_plan);
  if (opt.keep_token_nll) {
    res.token_nll.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
    res.score_count.assign(static_cast<size_t>(n), 0);
  }
  std::vector<int64_t> pending = opt.probes;
  std::sort(pending.begin(), pending.end());
  pending.erase(std::unique(pending.begin(), pending.end()), pending.end());

  // Mixtures (mixer.h): statistics gathered while scoring, mixed in target order at the group's end.
  const bool mixing = opt.ngram.enabled || opt.tapin.enabled;
  const bool need_entropy = opt.ngram.enabled && opt.ngram.alpha_entropy;
  const bool need_rows = need_entropy || (opt.tapin.enabled && opt.tapin.top_k > 0);
  std::unique_ptr<NgramCache> ngram = opt.ngram.enabled ? std::make_unique<NgramCache>(opt.ngram) : nullptr;
  std::unique_ptr<TapIn> tapin = opt.tapin.enabled ? std::make_unique<TapIn>(opt.tapin, tokens.data(), n, V) : nullptr;
  std::vector<int64_t> bos_pos;
  if (tapin)
    for (int64_t p = 0; p < n; ++p)
      if (tokens[static_cast<size_t>(p)] == bos) bos_pos.push_back(p);
  auto doc_start = [&](int64_t t) {  // the last BOS at or before the input position t - 1
    auto it = std::upper_bound(bos_pos.begin(), bos_pos.end(), t - 1);
    return it == bos_pos.begin() ? int64_t{0} : *(it - 1);
  };
  const double t_prepare = seconds_since(t_start);

  // --- score (and adapt between chunks).
  double t_score = 0, t_mix = 0, t_adapt = 0, t_global = 0;
  dist::Communicator* const comm = opt.comm && opt.comm->world() > 1 ? opt.comm : nullptr;
  const int world = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  res.world = world;
  // Split over ranks, rank 0's clock decides (broadcast), so every rank stops after the same batch.
  auto over_budget = [&] {
    if (opt.time_budget_s <= 0) return false;
    const bool over = seconds_since(t_start) > opt.time_budget_s;
    return comm ? comm->broadcast_f64(over ? 1.0 : 0.0, 0) != 0.0 : over;
  };
  bool stop = false;
  int64_t ttt_first = 1;  // first target of the current TTT chunk
  for (size_t g = 0; g < groups.size() && !stop; ++g) {
    const Group& gr = groups[g];
    if (adapter && opt.leak == TestLeak::TrainBeforeScore) {  // illegal on purpose (auditor tests only)
      int64_t first = n, end = 0;
      for (size_t i = gr.begin; i < gr.end; ++i) {
        first = std::min(first, windows[i].first_target());
        end = std::max(end, windows[i].end_target());
      }
      adapter->train(tokens.data(), first, end, opt.ttt.lr, runner.arena());
    }
    const auto ts = Clock::now();
    ChunkScore chunk;
    chunk.first_target = std::numeric_limits<int64_t>::max();
    int64_t gfirst = n, gend = 0;  // the group's target range
    std::vector<MixInput> mix;
    std::vector<uint8_t> done;
    std::vector<std::pair<int64_t, std::vector<float>>> probe_rows;  // model distributions of probes
    if (mixing) {
      for (size_t i = gr.begin; i < gr.end; ++i) {
        gfirst = std::min(gfirst, windows[i].first_target());
        gend = std::max(gend, windows[i].end_target());
      }
      mix.assign(static_cast<size_t>(gend - gfirst), MixInput{});
      done.assign(mix.size(), 0);
    }
    for (size_t b = gr.begin; b < gr.end && !stop;) {
      // One round: up to `world` consecutive batches (the ones one rank would run, in order); batch k of the
      // round is scored by rank k. With one rank a round is one batch.
      std::vector<size_t> bstart;
      size_t e = b;
      for (int k = 0; k < world && e < gr.end; ++k) {
        bstart.push_back(e);
        e += static_cast<size_t>(std::min<int64_t>(runner.rows_max(), static_cast<int64_t>(gr.end - e)));
      }
      bstart.push_back(e);
      const int64_t nb = static_cast<int64_t>(bstart[1] - bstart[0]);  // mixing: world 1, the round's one batch
      const Window* ws = windows.data() + b;
      int64_t row_len = 0;
      for (int64_t r = 0; r < nb; ++r) row_len = std::max(row_len, ws[r].len);
      if (!mixing) {
        std::vector<double> nlls(e - b, 0.0);  // per window of the round, in window order
        std::vector<double> mine(comm ? static_cast<size_t>(runner.rows_max()) : 0, 0.0);
        for (int k = 0; k + 1 < static_cast<int>(bstart.size()); ++k) {
          if (comm && k != rank) continue;
          const Window* kw = windows.data() + bstart[static_cast<size_t>(k)];
          const int64_t kn = static_cast<int64_t>(bstart[static_cast<size_t>(k) + 1] - bstart[static_cast<size_t>(k)]);
          int64_t klen = 0;
          for (int64_t r = 0; r < kn; ++r) klen = std::max(klen, kw[r].len);
          const std::vector<float> losses = runner.losses(kw, kn, klen);
          for (int64_t r = 0; r < kn; ++r) {
            const Window& w = kw[r];
            double nll = 0;
            for (int64_t i = w.score_from; i < w.len; ++i) {
              const double l = leaked_nll(opt.leak, losses[static_cast<size_t>(r * klen + i)]);
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
            if (comm) mine[static_cast<size_t>(r)] = nll;
            else nlls[bstart[static_cast<size_t>(k)] - b + static_cast<size_t>(r)] = nll;
          }
        }
        if (comm) {  // every rank gets every window's sum, exactly (doubles moved as bytes)
          const std::vector<double> all = comm->all_gather_f64(mine);
          for (int k = 0; k + 1 < static_cast<int>(bstart.size()); ++k)
            for (size_t i = bstart[static_cast<size_t>(k)]; i < bstart[static_cast<size_t>(k) + 1]; ++i)
              nlls[i - b] = all[static_cast<size_t>(k) * mine.size() + (i - bstart[static_cast<size_t>(k)])];
        }
        // In window order, as one rank adds them: the same double additions for every world size.
        for (size_t i = b; i < e; ++i) {
          const Window& w = windows[i];
          chunk.acc.add(nlls[i - b], w.scored(), data::count_scored_bytes(luts, tokens.data(), w.first_target(), w.end_target()));
          chunk.first_target = std::min(chunk.first_target, w.first_target());
          chunk.end_target = std::max(chunk.end_target, w.end_target());
        }
      } else {
        std::vector<float> lps, losses;
        if (need_rows) lps = runner.scored_logprobs(ws, nb, row_len);
        else losses = runner.losses(ws, nb, row_len);
        const auto tm = Clock::now();
        size_t row = 0;  // index into lps
        for (int64_t r = 0; r < nb; ++r) {
          const Window& w = ws[r];
          for (int64_t i = w.score_from; i < w.len; ++i, ++row) {
            const int64_t t = w.start + i + 1;
            const int y = tokens[static_cast<size_t>(t)];
            MixInput& m = mix[static_cast<size_t>(t - gfirst)];
            TapHint th;
            if (tapin) th = tapin->hint(t, w.start, doc_start(t));
            if (need_rows) {
              const RowStats rs = row_stats(lps.data() + row * static_cast<size_t>(V), V, y, th.token, need_entropy);
              m.lp_model = rs.lp_target;
              m.entropy = rs.entropy;
              if (th.token >= 0 && opt.tapin.top_k > 0 && rs.hint_rank >= opt.tapin.top_k) th = TapHint{};
            } else {
              m.lp_model = -static_cast<double>(losses[static_cast<size_t>(r * row_len + i)]);
            }
            m.hint = th.token;
            m.tap_w = th.weight;
            ++done[static_cast<size_t>(t - gfirst)];
            if (opt.keep_token_nll) ++res.score_count[static_cast<size_t>(t)];
            auto it = std::lower_bound(pending.begin(), pending.end(), t);
            if (it != pending.end() && *it == t) {
              probe_rows.emplace_back(t, runner.distribution(w, i));
              pending.erase(it);
            }
          }
          // The NLL is committed by the walk below; bytes and counts per window as always.
          chunk.acc.add(0.0, w.scored(), data::count_scored_bytes(luts, tokens.data(), w.first_target(), w.end_target()));
          chunk.first_target = std::min(chunk.first_target, w.first_target());
          chunk.end_target = std::max(chunk.end_target, w.end_target());
        }
        t_mix += seconds_since(tm);
      }
      res.windows += static_cast<int64_t>(e - b);
      b = e;
      if (over_budget() || (opt.stop_after_probes && !opt.probes.empty() && pending.empty())) stop = true;
    }
    if (mixing) {
      // The walk, in target order: mix with the state built from earlier targets, commit, then observe.
      const auto tm = Clock::now();
      for (int64_t t = gfirst; t < gend; ++t) {
        const uint8_t d = done[static_cast<size_t>(t - gfirst)];
        if (d == 0) continue;
        PG_CHECK(d == 1, "eval: target {} was scored {} times", t, d);
        const MixInput& m = mix[static_cast<size_t>(t - gfirst)];
        const int y = tokens[static_cast<size_t>(t)];
        if (ngram && opt.leak == TestLeak::NgramCountsTarget) ngram->observe(tokens.data(), t);  // illegal on purpose
        const NgramCache::Query q = ngram ? ngram->query(tokens.data(), t) : NgramCache::Query{};
        const double alpha = q.order > 0 ? ngram->alpha(m.entropy) : 0.0;
        const double nll = -mixed_logprob(m.lp_model, ngram.get(), q, alpha, y, m.hint, m.tap_w);
        chunk.acc.add(nll, 0, 0);
        res.ngram_fired += q.order > 0 ? 1 : 0;
        res.tapin_fired += m.hint >= 0 ? 1 : 0;
        if (opt.keep_token_nll) res.token_nll[static_cast<size_t>(t)] = static_cast<float>(nll);
        for (const auto& [pt, row] : probe_rows)
          if (pt == t) res.probes.push_back(Probe{t, mixed_distribution(row, ngram.get(), q, alpha, m.hint, m.tap_w), nll});
        if (ngram && opt.leak != TestLeak::NgramCountsTarget)
          ngram->observe(tokens.data(), t);  // x_t is scored: only now may it be counted
      }
      t_mix += seconds_since(tm);
    }
    t_score += seconds_since(ts);
    res.acc.merge(chunk.acc);
    if (chunk.acc.tokens > 0) res.chunks.push_back(chunk);
    if (stop) break;
    PG_CHECK(chunk.end_target - chunk.first_target == chunk.acc.tokens,
             "eval: chunk {} scored {} targets but spans [{}, {}) (windows not contiguous)", g, chunk.acc.tokens,
             chunk.first_target, chunk.end_target);
    const bool last = g + 1 == groups.size();
    if (g == 0 || groups[g - 1].chunk != gr.chunk) ttt_first = chunk.first_target;  // a phase may split a chunk
    if (adapter && !last && opt.leak != TestLeak::TrainBeforeScore && groups[g + 1].chunk != gr.chunk) {
      const auto ta = Clock::now();
      // Score first: every target trained on here was added to the total above, with the old weights.
      adapter->train(tokens.data(), ttt_first, chunk.end_target, ttt_chunk_lr(opt.ttt, gr.chunk, num_chunks),
                     runner.arena());
      t_adapt += seconds_since(ta);
      if (over_budget()) stop = true;
    }
    if (global && !last && !stop && groups[g + 1].phase != gr.phase) {
      // A phase ends: global SGD over the whole scored prefix [1, end) (every target in it is scored).
      const auto ta = Clock::now();
      const int64_t end = chunk.end_target;
      PG_CHECK(res.acc.tokens == end - 1, "eval: phase end {} but {} targets scored (prefix not contiguous)", end,
               res.acc.tokens);
      const int64_t ct = opt.phased.chunk_tokens, nc = (end - 1 + ct - 1) / ct;
      const TttOptions pt = opt.phased.as_ttt();
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t a = 1 + c * ct;
        global->train(tokens.data(), a, std::min(end, a + ct), ttt_chunk_lr(pt, c, nc), runner.arena());
      }
      res.phase_ends.push_back(end);
      t_global += seconds_since(ta);
      if (over_budget()) stop = true;
    }
  }
  res.partial = res.windows < res.total_windows;
  if (adapter) res.ttt_steps = adapter->steps();
  if (global) res.phased_steps = global->steps();
  if (snapshot) snapshot->restore(model);
  if (ngram) res.ngram_entries = ngram->entries();
  res.phase_seconds = {{"prepare", t_prepare}, {"score", t_score - t_mix}};
  if (mixing) res.phase_seconds.emplace_back("mix", t_mix);
  res.phase_seconds.emplace_back("adapt", t_adapt);
  if (global) res.phase_seconds.emplace_back("global_ttt", t_global);
  return res;
}

}  // namespace pgolf::eval
