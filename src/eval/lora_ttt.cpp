#include "eval/lora_ttt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "core/arena.h"
#include "core/error.h"
#include "dist/comm.h"
#include "eval/lora_adapter.h"
#include "eval/scorer.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"

namespace pgolf::eval {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Freezes the base weights for the scope of the evaluation (their grads freed: the adapt backward computes only
// what the adapters need) and puts the table back as it was on every exit path (unfreezing gives zeroed grads).
struct FreezeGuard {
  model::ParamTable& table;
  bool was;
  FreezeGuard(model::ParamTable& t, bool freeze) : table(t), was(t.frozen()) {
    if (freeze) table.set_frozen(true);
  }
  ~FreezeGuard() { table.set_frozen(was); }
};

// Sets the model's adapter for the scope of the evaluation, and takes it off on every exit path.
struct AdapterGuard {
  model::GPT& model;
  AdapterGuard(model::GPT& m, model::GPT::Adapter* a) : model(m) { model.set_adapter(a); }
  ~AdapterGuard() { model.set_adapter(nullptr); }
};

// The full log-distribution (V) that scores row `row` of window w: forward_logits on the window alone, then the
// soft-cap log-softmax (the audit's probe).
std::vector<float> window_distribution(model::GPT& model, const std::vector<uint16_t>& tokens, const Window& w,
                                       int64_t row, Arena& arena) {
  const int V = model.config().vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(w.len));
  for (int64_t i = 0; i < w.len; ++i) ids[static_cast<size_t>(i)] = tokens[static_cast<size_t>(w.start + i)];
  const Tensor ids_t = Tensor::from_vector(ids, Shape{1, w.len}, model.device());
  Tensor logits = Tensor::empty(Shape{w.len, V}, model.config().act_dtype, model.device());
  model.forward_logits(ids_t, arena, logits);
  Tensor lp = Tensor::empty(Shape{w.len, V}, DType::F32, model.device());
  ops::copy(logits, lp);
  ops::softcap_log_softmax(lp, model.config().logit_softcap, lp);
  return lp.slice(row, row + 1).to_float_vector();
}

}  // namespace

std::vector<bool> parse_lora_sites(const std::string& spec) {
  static const char* names[] = {"q", "k", "v", "o", "mlp", "head"};
  std::vector<bool> on(6, false);
  std::stringstream ss(spec);
  std::string item;
  int count = 0;
  while (std::getline(ss, item, ',')) {
    const auto it = std::find(std::begin(names), std::end(names), item);
    PG_CHECK(it != std::end(names), "eval: --lora-sites entry '{}' is not one of q, k, v, o, mlp, head", item);
    on[static_cast<size_t>(it - std::begin(names))] = true;
    ++count;
  }
  PG_CHECK(count > 0, "eval: --lora-sites '{}' names no projection (use e.g. q,k,v,o,mlp,head)", spec);
  return on;
}

void check_lora_options(const LoraTttOptions& o, int64_t context) {
  PG_CHECK(o.rank >= 1, "eval: --lora-rank {} must be >= 1", o.rank);
  PG_CHECK(std::isfinite(o.alpha) && o.alpha > 0, "eval: --lora-alpha {} must be > 0", o.alpha);
  PG_CHECK(o.chunk >= 1 && o.chunk <= context,
           "eval: --lora-chunk {} must be in [1, --context {}] (a chunk is scored inside one window)", o.chunk, context);
  PG_CHECK(o.docs_per_batch >= 1, "eval: --lora-docs-per-batch {} must be >= 1", o.docs_per_batch);
  PG_CHECK(o.forward_tokens >= 1, "eval: LoRA TTT forward_tokens {} must be >= 1", o.forward_tokens);
  PG_CHECK(std::isfinite(o.lr) && o.lr >= 0, "eval: --lora-lr {} must be >= 0", o.lr);
  PG_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
           "eval: --lora-beta1 {} and --lora-beta2 {} must be in [0, 1)", o.beta1, o.beta2);
  PG_CHECK(o.eps > 0, "eval: --lora-eps {} must be > 0", o.eps);
  PG_CHECK(o.weight_decay >= 0 && o.lr * o.weight_decay < 1,
           "eval: --lora-wd {} must be >= 0 with lr * wd < 1", o.weight_decay);
  (void)parse_lora_sites(o.sites);
}

std::vector<LoraDoc> find_documents(const uint16_t* tokens, int64_t n, int bos_id) {
  std::vector<LoraDoc> docs;
  int64_t begin = 0;
  for (int64_t i = 1; i < n - 1; ++i) {
    if (tokens[i] != bos_id) continue;
    docs.push_back(LoraDoc{begin, i});  // its targets run to and include the next BOS
    begin = i;
  }
  if (n - 1 > begin) docs.push_back(LoraDoc{begin, n - 1});
  return docs;
}

int64_t lora_num_chunks(const LoraDoc& d, int64_t chunk) { return (d.targets() + chunk - 1) / chunk; }

Window lora_chunk_window(const LoraDoc& d, int64_t c, int64_t chunk, int64_t context) {
  const int64_t first = d.begin + c * chunk + 1, last = std::min(d.begin + (c + 1) * chunk, d.end);
  PG_CHECK(first <= last, "lora: chunk {} of a document of {} targets", c, d.targets());
  // The window starts where a full chunk's would: the last chunk ends at the document's end (the next BOS), so
  // starting it at `last - context` would let the context of every target of that chunk depend on where the
  // document ends, i.e. on later tokens (the audit catches that variant on documents longer than the context).
  Window w;
  w.start = std::max(d.begin, d.begin + (c + 1) * chunk - context);
  w.len = last - w.start;
  w.score_from = first - 1 - w.start;
  return w;
}

LoraRoundShape lora_round_shape(const LoraTttOptions& o, int64_t c, int64_t context) {
  LoraRoundShape sh;
  sh.len = std::min((c + 1) * o.chunk, context);
  sh.rows = std::clamp<int64_t>(o.forward_tokens / sh.len, 1, o.docs_per_batch);
  return sh;
}

std::vector<std::vector<size_t>> lora_batches(const std::vector<LoraDoc>& docs, int64_t per_batch) {
  std::vector<size_t> order(docs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return docs[a].targets() > docs[b].targets(); });
  std::vector<std::vector<size_t>> out;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(per_batch))
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i),
                     order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), i + static_cast<size_t>(per_batch))));
  return out;
}

EvalResult evaluate_lora(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                         const EvalOptions& opt) {
  const LoraTttOptions& lo = opt.lora;
  check_lora_options(lo, opt.context);
  PG_CHECK(!opt.ttt.enabled && !opt.phased.enabled && !opt.ngram.enabled && !opt.tapin.enabled,
           "eval: --lora-ttt does not combine with --ttt, --phased-ttt, --ngram or --tapin yet");
  PG_CHECK(!(opt.comm && opt.comm->world() > 1), "eval: --lora-ttt runs on one rank (world {})", opt.comm->world());
  PG_CHECK(opt.leak == TestLeak::None || opt.leak == TestLeak::TrainBeforeScore || opt.leak == TestLeak::InputSeesTarget,
           "eval: this test leak is not implemented for LoRA TTT");
  const auto t_start = Clock::now();
  const int64_t n = static_cast<int64_t>(tokens.size()), T = opt.context, K = lo.chunk;
  EvalResult res;
  res.stream_targets = n - 1;

  // --- prepare: documents, batches, adapters, buffers.
  const std::vector<LoraDoc> docs = find_documents(tokens.data(), n, model.config().bos_id);
  const std::vector<std::vector<size_t>> batches = lora_batches(docs, lo.docs_per_batch);
  for (const LoraDoc& d : docs) res.total_windows += lora_num_chunks(d, K);
  // Every round's shape (rows, L) depends on the round index alone (lora_round_shape); the rounds from
  // c_full = ceil(T / K) - 1 on all have L = T. Adapter rows: the batch's documents rounded up to whole groups
  // (the rows past a batch's documents are empty padding rows).
  const int64_t P = std::min<int64_t>(lo.docs_per_batch, static_cast<int64_t>(docs.size()));
  const int64_t c_full = (T + K - 1) / K - 1;
  int64_t adapter_rows = P;
  for (int64_t c = 0; c <= c_full; ++c) {
    const LoraRoundShape rs = lora_round_shape(lo, c, T);
    adapter_rows = std::max(adapter_rows, (P + rs.rows - 1) / rs.rows * rs.rows);
  }
  LoraAdapters adapters(model, lo, adapter_rows);
  AdapterGuard guard(model, &adapters);
  FreezeGuard freeze(model.params(), lo.frozen_base);  // before the plan: a frozen backward allocates less
  Arena arena(model.device(), "lora ttt arena");
  size_t plan = 0;
  int64_t max_tokens = 0;
  for (int64_t c = 0; c <= c_full; ++c) {
    const LoraRoundShape rs = lora_round_shape(lo, c, T);
    if (c > 0 && rs.rows == lora_round_shape(lo, c - 1, T).rows && rs.len == lora_round_shape(lo, c - 1, T).len) continue;
    adapters.use_rows(0, rs.rows);
    plan = std::max(plan, model.plan_bytes(rs.rows, rs.len, /*with_backward=*/true));
    max_tokens = std::max(max_tokens, rs.rows * rs.len);
  }
  if (!opt.probes.empty()) {
    adapters.use_rows(0, 1);
    plan = std::max(plan, model.plan_bytes(1, T, false));
  }
  arena.reserve(plan + plan / 8 + (1 << 20));
  const Device dev = model.device();
  Tensor ids_d = Tensor::empty(Shape{max_tokens}, DType::I32, dev), targets_d = Tensor::empty(Shape{max_tokens}, DType::I32, dev);
  Tensor losses_d = Tensor::empty(Shape{max_tokens}, DType::F32, dev);
  std::vector<int32_t> ids(static_cast<size_t>(max_tokens)), targets(ids.size());
  std::vector<float> losses;  // the round's per-token losses, (groups * rows, L)
  if (opt.keep_token_nll) {
    res.token_nll.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
    res.score_count.assign(static_cast<size_t>(n), 0);
  }
  std::vector<int64_t> pending = opt.probes;
  std::sort(pending.begin(), pending.end());
  pending.erase(std::unique(pending.begin(), pending.end()), pending.end());
  const double t_prepare = seconds_since(t_start);

  // --- score each chunk, then step the documents that have more chunks.
  double t_score = 0, t_adapt = 0;
  bool stop = false;
  const bool see_target = opt.leak == TestLeak::InputSeesTarget;
  const float grad_scale = 1.f / static_cast<float>(K);  // per document: the mean over its chunk's K targets
  for (const std::vector<size_t>& batch : batches) {
    if (stop) break;
    const int64_t nb = static_cast<int64_t>(batch.size());
    adapters.begin_batch(adapter_rows);  // padding rows too: they hold nothing from earlier batches
    std::vector<int64_t> chunks(static_cast<size_t>(nb));
    for (int64_t r = 0; r < nb; ++r) chunks[static_cast<size_t>(r)] = lora_num_chunks(docs[batch[static_cast<size_t>(r)]], K);
    for (int64_t c = 0; c < chunks[0] && !stop; ++c) {
      // Documents are longest first, so those with chunk c (n_act) and those with a chunk after it (n_train)
      // are prefixes of the batch.
      int64_t n_act = 0, n_train = 0;
      while (n_act < nb && chunks[static_cast<size_t>(n_act)] > c) ++n_act;
      while (n_train < nb && chunks[static_cast<size_t>(n_train)] > c + 1) ++n_train;
      const LoraRoundShape rs = lora_round_shape(lo, c, T);
      const int64_t G = rs.rows, L = rs.len, groups = (n_act + G - 1) / G;
      std::vector<Window> ws(static_cast<size_t>(n_act));
      for (int64_t r = 0; r < n_act; ++r) {
        ws[static_cast<size_t>(r)] = lora_chunk_window(docs[batch[static_cast<size_t>(r)]], c, K, T);
        PG_CHECK(ws[static_cast<size_t>(r)].len <= L, "lora: a window of {} tokens in a round of {}",
                 ws[static_cast<size_t>(r)].len, L);
      }
      // One forward (and backward) per group of G rows, every row right-padded to L: the round's shape whatever
      // the other documents are. Only the chunk's targets count (context rows, padding and empty rows carry
      // ignored targets), so the training loss is exactly the loss of the targets just scored; causal attention
      // keeps the padding after a window out of its real positions. Every group runs the backward, also where
      // none of its documents trains, so a document's last chunk is not scored by a different pass either.
      auto run_group = [&](int64_t g0) {
        for (int64_t r = g0; r < g0 + G; ++r) {
          const bool real = r < n_act;
          const Window w = real ? ws[static_cast<size_t>(r)] : Window{};
          for (int64_t i = 0; i < L; ++i) {
            const size_t k = static_cast<size_t>((r - g0) * L + i);
            const bool in = real && i < w.len;
            const size_t t = in ? static_cast<size_t>(w.start + i + 1) : 0;
            ids[k] = in ? (see_target ? tokens[t] : tokens[t - 1]) : 0;
            targets[k] = in && i >= w.score_from ? tokens[t] : -1;
          }
        }
        const Shape sh{G, L};
        const Tensor ids_t = ids_d.slice(0, G * L).view(sh), tg_t = targets_d.slice(0, G * L).view(sh);
        const Tensor losses_t = losses_d.slice(0, G * L);
        ids_t.copy_from(Tensor::from_blob(ids.data(), sh, DType::I32, Device::CPU));
        tg_t.copy_from(Tensor::from_blob(targets.data(), sh, DType::I32, Device::CPU));
        adapters.use_rows(g0, G);
        model.forward_backward_losses(ids_t, tg_t, grad_scale, arena, losses_t);
        const std::vector<float> l = losses_t.to_float_vector();
        std::copy(l.begin(), l.end(), losses.begin() + g0 * L);
      };
      losses.assign(static_cast<size_t>(groups * G * L), 0.f);
      if (opt.leak == TestLeak::TrainBeforeScore && n_train > 0) {  // illegal on purpose (auditor tests only)
        adapters.zero_grad(groups * G);
        for (int64_t g0 = 0; g0 < n_act; g0 += G) run_group(g0);
        adapters.step(n_act);
      }
      const auto ts = Clock::now();
      const bool train = n_train > 0 && opt.leak != TestLeak::TrainBeforeScore;
      adapters.zero_grad(groups * G);
      for (int64_t g0 = 0; g0 < n_act; g0 += G) run_group(g0);
      // Commit the chunk's NLL (and capture probes) with the adapters as they were when it was scored.
      for (int64_t r = 0; r < n_act; ++r) {
        const Window& w = ws[static_cast<size_t>(r)];
        double nll = 0;
        for (int64_t i = w.score_from; i < w.len; ++i) {
          const double l = losses[static_cast<size_t>(r * L + i)];
          nll += l;
          const int64_t t = w.start + i + 1;
          if (opt.keep_token_nll) {
            res.token_nll[static_cast<size_t>(t)] = static_cast<float>(l);
            ++res.score_count[static_cast<size_t>(t)];
          }
          auto it = std::lower_bound(pending.begin(), pending.end(), t);
          if (it != pending.end() && *it == t) {
            adapters.use_rows(r, 1);
            res.probes.push_back(Probe{t, window_distribution(model, tokens, w, i, arena), l});
            pending.erase(it);
          }
        }
        res.acc.add(nll, w.scored(), data::count_scored_bytes(luts, tokens.data(), w.first_target(), w.end_target()));
      }
      res.windows += n_act;
      const double dt = seconds_since(ts);
      const auto ta = Clock::now();
      if (train) {
        adapters.step(n_train);  // only now: every target it trains on is in the total above
        ++res.ttt_steps;
      }
      if (train) t_adapt += dt + seconds_since(ta);
      else t_score += dt;
      if (opt.time_budget_s > 0 && seconds_since(t_start) > opt.time_budget_s) stop = true;
      if (opt.stop_after_probes && !opt.probes.empty() && pending.empty()) stop = true;
    }
  }
  // The base weights never change, but an unfrozen run's LoRA passes accumulated their gradients: give the caller
  // clean ones (a frozen table has none; FreezeGuard hands back zeroed ones if it had them before).
  if (!model.params().frozen()) model.params().zero_grads();
  res.partial = res.windows < res.total_windows;
  res.phase_seconds = {{"prepare", t_prepare}, {"score", t_score}, {"adapt", t_adapt}};
  return res;
}

}  // namespace pgolf::eval
