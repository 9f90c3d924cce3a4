#include "eval/hash_embed.h"

#include <vector>

#include "core/error.h"

namespace pgolf::eval {

std::unique_ptr<model::GPT> with_hash_embedding(const model::GPT& base, const HashEmbedOptions& o) {
  model::ModelConfig cfg = base.config();
  PG_CHECK(cfg.bigram_buckets == 0,
           "eval --hash-embed: the model already has a BigramHash table ({} buckets); the eval-time table would "
           "replace it",
           cfg.bigram_buckets);
  PG_CHECK(o.buckets >= 2 && o.buckets <= (int64_t{1} << 24), "eval: --hash-embed-buckets {} must be in [2, 2^24]",
           o.buckets);
  PG_CHECK(o.lr_mult > 0.f, "eval: --hash-embed-lr-mult {} must be > 0", o.lr_mult);
  cfg.bigram_buckets = static_cast<int>(o.buckets);
  cfg.bigram_dim = cfg.model_dim;
  auto m = std::make_unique<model::GPT>(cfg, base.device());
  m->set_loop_passes(base.loop_passes_on());
  for (const auto& p : base.params().all()) m->params().get(p.spec.name).value.copy_from(p.value);
  const int64_t d = cfg.model_dim;
  for (auto& p : m->params().all()) {
    if (base.params().find(p.spec.name)) continue;
    std::vector<float> v(static_cast<size_t>(p.value.numel()), 0.f);
    if (p.spec.name == "bigram.proj.weight") {
      for (int64_t i = 0; i < d; ++i) v[static_cast<size_t>(i * d + i)] = 1.f;
    } else if (p.spec.name == "bigram.scale") {
      v.assign(v.size(), 1.f);
    } else {
      PG_CHECK(p.spec.name == "bigram.embed.weight", "eval --hash-embed: unexpected new parameter {}", p.spec.name);
    }
    p.value.copy_from(Tensor::from_blob(v.data(), p.value.shape(), DType::F32, Device::CPU));
  }
  m->params().sync_compute();
  m->params().zero_grads();
  return m;
}

TttOptions hash_embed_ttt(const TttOptions& ttt, const HashEmbedOptions& o) {
  TttOptions t = ttt;
  t.lr_mult.emplace_back("bigram.embed.weight", o.lr_mult);
  t.lr_mult.emplace_back("bigram.proj.weight", 0.f);
  t.lr_mult.emplace_back("bigram.scale", 0.f);
  return t;
}

}  // namespace pgolf::eval
