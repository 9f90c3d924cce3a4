#include "quant/calibrate.h"

#include <chrono>

#include "core/arena.h"
#include "core/error.h"
#include "data/loader.h"
#include "model/tape.h"
#include "ops/matmul.h"

namespace pgolf::quant {

struct HessianCollector::Group {
  int64_t cols = 0;
  int64_t rows = 0;
  std::unique_ptr<HessianAccumulator> host;  // GramPath::Host
  Tensor gram;                               // GramPath::Device: (cols, cols) f32 Σ XᵀX
};

HessianCollector::HessianCollector(GramPath path) : path_(path) {
  auto& hook = model::Tape::linear_input_hook();
  PG_CHECK(!hook, "HessianCollector: another linear-input hook is already installed on this thread");
  hook = [this](const std::string& weight, const Tensor& x) { on_linear(weight, x); };
  installed_ = true;
}

HessianCollector::~HessianCollector() {
  if (installed_) model::Tape::linear_input_hook() = nullptr;
}

void HessianCollector::begin_pass() { pass_inputs_.clear(); }

void HessianCollector::on_linear(const std::string& weight, const Tensor& x) {
  PG_CHECK(x.ndim() == 2 && x.numel() > 0, "calibration: input of '{}' is {}, expected (N, in)", weight, x.desc());
  const auto seen = pass_inputs_.find(x.data());
  if (auto al = alias_.find(weight); al != alias_.end()) {
    // Accumulated through its owner: the owner must have consumed this very input in this pass.
    PG_CHECK(seen != pass_inputs_.end() && seen->second == al->second,
             "calibration: '{}' shared its input with '{}' in an earlier pass but not in this one", weight, al->second);
    return;
  }
  auto g = groups_.find(weight);
  if (g == groups_.end()) {
    if (seen != pass_inputs_.end() && seen->second != weight) {
      alias_[weight] = seen->second;
      return;
    }
    auto grp = std::make_unique<Group>();
    grp->cols = x.dim(1);
    g = groups_.emplace(weight, std::move(grp)).first;
  }
  Group& grp = *g->second;
  PG_CHECK(x.dim(1) == grp.cols, "calibration: input of '{}' has {} columns, earlier {}", weight, x.dim(1), grp.cols);
  const GramPath path = path_ != GramPath::Auto ? path_ : x.is_cuda() ? GramPath::Device : GramPath::Host;
  if (path == GramPath::Host) {
    PG_CHECK(!grp.gram.defined(), "calibration: '{}' mixes gram paths", weight);
    if (!grp.host) grp.host = std::make_unique<HessianAccumulator>(grp.cols);
    const std::vector<float> xs = x.to_float_vector();  // (N, in) f32 on the host
    grp.host->add(xs, x.dim(0));
  } else {
    PG_CHECK(!grp.host, "calibration: '{}' mixes gram paths", weight);
    if (!grp.gram.defined()) grp.gram = Tensor::zeros(Shape{grp.cols, grp.cols}, DType::F32, x.device());
    ops::matmul(x, ops::Trans::T, x, ops::Trans::N, grp.gram, 1.f, 1.f);  // += XᵀX
  }
  grp.rows += x.dim(0);
  pass_inputs_.emplace(x.data(), weight);
}

std::map<std::string, LinearHessian> HessianCollector::finish() {
  if (installed_) {
    model::Tape::linear_input_hook() = nullptr;
    installed_ = false;
  }
  std::map<std::string, LinearHessian> out;
  for (auto& [name, grp] : groups_) {
    LinearHessian lh;
    lh.cols = grp->cols;
    lh.rows = grp->rows;
    if (grp->host) {
      lh.h = grp->host->hessian();
    } else {
      PG_CHECK(grp->rows > 0, "calibration: no rows reached '{}'", name);
      const std::vector<float> g = grp->gram.to_float_vector();
      const int64_t n = grp->cols;
      const double inv = 1.0 / static_cast<double>(grp->rows);
      lh.h.resize(g.size());
      // f32 GEMM gives XᵀX up to rounding; averaging the two triangles makes it exactly symmetric.
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          lh.h[static_cast<size_t>(i * n + j)] =
              0.5 * (static_cast<double>(g[static_cast<size_t>(i * n + j)]) + g[static_cast<size_t>(j * n + i)]) * inv;
    }
    out.emplace(name, std::move(lh));
  }
  for (const auto& [weight, owner] : alias_) {
    LinearHessian lh = out.at(owner);
    lh.shared_with = owner;
    out.emplace(weight, std::move(lh));
  }
  groups_.clear();
  alias_.clear();
  return out;
}

std::map<std::string, LinearHessian> collect_hessians(model::GPT& gpt, data::TokenStream& tokens,
                                                      const CalibrationOptions& opt, CalibrationStats* stats) {
  PG_CHECK(opt.batches > 0 && opt.batch_seqs > 0 && opt.seq_len > 0,
           "calibration: batches {}, batch_seqs {}, seq_len {} must all be > 0", opt.batches, opt.batch_seqs,
           opt.seq_len);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t B = opt.batch_seqs, T = opt.seq_len, V = gpt.config().vocab_size;
  const Device dev = gpt.device();
  Arena arena(dev, "calibration");
  arena.reserve(gpt.plan_bytes(B, T, /*with_backward=*/false));
  Tensor losses = Tensor::empty(Shape{B * T}, DType::F32, dev);
  std::vector<int32_t> span(static_cast<size_t>(B * T + 1));
  std::vector<int32_t> ids(static_cast<size_t>(B * T)), targets(static_cast<size_t>(B * T));

  HessianCollector collector(opt.path);
  for (int64_t b = 0; b < opt.batches; ++b) {
    tokens.next_span(B * T + 1, span.data());
    for (int64_t i = 0; i < B * T; ++i) {
      const int32_t tok = span[static_cast<size_t>(i)];
      PG_CHECK(tok >= 0 && tok < V, "calibration: token {} at batch {} is outside the vocabulary of {}", tok, b, V);
      ids[static_cast<size_t>(i)] = tok;
      targets[static_cast<size_t>(i)] = span[static_cast<size_t>(i + 1)];
    }
    // Targets only feed the loss (not the Hessians); clamp the one past the batch if it is invalid.
    for (auto& t : targets)
      if (t < 0 || t >= V) t = 0;
    collector.begin_pass();
    gpt.forward_losses(Tensor::from_vector(ids, Shape{B, T}, dev), Tensor::from_vector(targets, Shape{B, T}, dev),
                       arena, losses);
  }
  auto out = collector.finish();
  if (stats) {
    stats->batches = opt.batches;
    stats->tokens = opt.batches * B * T;
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return out;
}

std::map<std::string, LinearHessian> collect_hessians(model::GPT& gpt, const CalibrationOptions& opt,
                                                      CalibrationStats* stats) {
  PG_CHECK(!opt.train_pattern.empty(), "calibration: no token shards given (train data pattern)");
  data::TokenStream tokens(opt.train_pattern);
  return collect_hessians(gpt, tokens, opt, stats);
}

}  // namespace pgolf::quant
