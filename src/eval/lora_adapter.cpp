#include "eval/lora_adapter.h"

#include <cmath>

#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/optim.h"
#include "ops/random.h"

namespace pgolf::eval {

using Site = model::GPT::AdapterSite;
constexpr int kSites = 6;  // Q, K, V, O, Mlp, Head

LoraAdapters::LoraAdapters(const model::GPT& model, const LoraTttOptions& opt, int64_t max_docs)
    : opt_(opt), act_(model.config().act_dtype), dev_(model.device()), max_docs_(max_docs) {
  const model::ModelConfig& c = model.config();
  PG_CHECK(max_docs > 0 && opt.rank > 0, "lora: {} documents of rank {}", max_docs, opt.rank);
  // Enough slots for the longest virtual list (every loop pass on), whatever the model does now.
  slots_ = static_cast<int>(model::layer_schedule(c, c.has_loop()).size());
  scale_ = opt.alpha / static_cast<float>(opt.rank);
  const std::vector<bool> on = parse_lora_sites(opt.sites);
  const int64_t d = c.model_dim, kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim(),
                q = static_cast<int64_t>(c.num_heads) * c.head_dim(), r = opt.rank;
  index_.assign(static_cast<size_t>((slots_ + 1) * kSites), -1);
  auto make = [&](int64_t rows, int64_t cols, bool with_init) {
    Mat m;
    const Shape s{max_docs, rows, cols};
    m.value = Tensor::zeros(s, DType::F32, dev_);
    m.grad = Tensor::zeros(s, DType::F32, dev_);
    m.m = Tensor::zeros(s, DType::F32, dev_);
    m.v = Tensor::zeros(s, DType::F32, dev_);
    if (act_ != DType::F32) m.compute = Tensor::zeros(s, act_, dev_);
    if (with_init) m.init = Tensor::empty(s, DType::F32, dev_);
    bytes_ += static_cast<size_t>(s.numel()) * (4 * 4 + (with_init ? 4 : 0) + (act_ != DType::F32 ? 2 : 0));
    return m;
  };
  for (int slot = -1; slot < slots_; ++slot) {
    for (int k = 0; k < kSites; ++k) {
      const Site site = static_cast<Site>(k);
      if (!on[static_cast<size_t>(k)] || (site == Site::Head) != (slot < 0)) continue;
      const int64_t out = site == Site::Q ? q : site == Site::K || site == Site::V ? kv
                          : site == Site::Head ? c.vocab_size : d;
      Entry e{site, slot, make(r, d, true), make(out, r, false)};
      // A's init: one (r, d) draw per factor, the same for every document (a document's adaptation must not
      // depend on the batch row it lands in), replicated so a batch reset is one copy per factor.
      const size_t idx = entries_.size();
      Tensor first = e.a.init.slice(0, 1);
      const float bound = 1.f / std::sqrt(static_cast<float>(d));
      ops::fill_uniform(first, opt.seed, static_cast<uint64_t>(idx) << 32, -bound, bound);
      for (int64_t g = 1; g < max_docs; ++g) ops::copy(first, e.a.init.slice(g, g + 1));
      index_[static_cast<size_t>((slot + 1) * kSites + k)] = static_cast<int>(idx);
      entries_.push_back(std::move(e));
    }
  }
  hp_ = Tensor::zeros(Shape{8}, DType::F32, dev_);
}

LoraAdapters::Entry* LoraAdapters::find(Site site, int slot) {
  PG_CHECK(slot >= -1 && slot < slots_, "lora: virtual slot {} outside the adapters' {} slots", slot, slots_);
  const int i = index_[static_cast<size_t>((slot + 1) * kSites + static_cast<int>(site))];
  return i < 0 ? nullptr : &entries_[static_cast<size_t>(i)];
}

void LoraAdapters::use_rows(int64_t first, int64_t count) {
  PG_CHECK(first >= 0 && count > 0 && first + count <= max_docs_, "lora: rows [{}, {}) outside {} documents", first,
           first + count, max_docs_);
  first_ = first;
  count_ = count;
}

void LoraAdapters::sync_compute(int64_t n) {
  if (act_ == DType::F32) return;
  for (Entry& e : entries_)
    for (Mat* m : {&e.a, &e.b}) ops::copy(m->value.slice(0, n), m->compute.slice(0, n));
}

void LoraAdapters::begin_batch(int64_t n) {
  PG_CHECK(n > 0 && n <= max_docs_, "lora: a batch of {} documents (at most {})", n, max_docs_);
  const bool keep_a = opt_.warm_a && started_;
  for (Entry& e : entries_) {
    if (!keep_a) ops::copy(e.a.init.slice(0, n), e.a.value.slice(0, n));
    ops::fill(e.b.value.slice(0, n), 0.f);
    for (Mat* m : {&e.a, &e.b}) {
      ops::fill(m->m.slice(0, n), 0.f);
      ops::fill(m->v.slice(0, n), 0.f);
    }
  }
  sync_compute(n);
  steps_ = 0;
  started_ = true;
}

void LoraAdapters::zero_grad(int64_t n) {
  for (Entry& e : entries_)
    for (Mat* m : {&e.a, &e.b}) ops::fill(m->grad.slice(0, n), 0.f);
}

void LoraAdapters::step(int64_t n) {
  PG_CHECK(n > 0 && n <= max_docs_, "lora: step on {} documents (at most {})", n, max_docs_);
  ++steps_;
  // Every document of a batch starts together and steps at each of its chunks but the last, so the documents
  // stepping now all take their steps_-th step: one bias correction for all.
  const double bc1 = 1.0 - std::pow(static_cast<double>(opt_.beta1), static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(opt_.beta2), static_cast<double>(steps_));
  std::vector<float> hp = {opt_.lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay,
                           static_cast<float>(bc1), static_cast<float>(bc2), 1.f};
  hp_.copy_from(Tensor::from_blob(hp.data(), Shape{8}, DType::F32, Device::CPU));
  for (Entry& e : entries_)
    for (Mat* m : {&e.a, &e.b})
      ops::adam_step(m->value.slice(0, n), m->grad.slice(0, n), m->m.slice(0, n), m->v.slice(0, n), hp_);
  sync_compute(n);
}

model::Var LoraAdapters::apply(model::Tape& tp, Site site, int slot, const model::Var& in, const model::Var& out) {
  Entry* e = find(site, slot);
  if (e == nullptr) return out;
  const int64_t lo = first_, hi = first_ + count_;
  auto weight = [&](const Mat& m) {
    return model::LoraWeight{(m.compute.defined() ? m.compute : m.value).slice(lo, hi), m.grad.slice(lo, hi)};
  };
  model::Var y = tp.lora_add(out, in, weight(e->a), weight(e->b), scale_);
  tp.release(out);  // the base projection's output is read by nothing else: free it now
  return y;
}

std::vector<LoraAdapters::Factor> LoraAdapters::factors() const {
  std::vector<Factor> out;
  for (const Entry& e : entries_) {
    out.push_back(Factor{e.site, e.slot, false, e.a.value, e.a.grad});
    out.push_back(Factor{e.site, e.slot, true, e.b.value, e.b.grad});
  }
  return out;
}

}  // namespace pgolf::eval
