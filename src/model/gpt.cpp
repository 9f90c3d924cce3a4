// The baseline GPT (TECHNIQUES.md §4.1-4.2): embedding + RMSNorm, U-Net encoder/decoder halves with
// LIFO skips, blocks with resid_mix / attn_scale / mlp_scale, q/k RMSNorm + RoPE + q_gain causal GQA
// attention, ReLU^2 MLP, final RMSNorm, tied head with logit soft-cap. Parameter names and shapes
// are those of the reference PyTorch module so safetensors files interchange.
#include "model/gpt.h"

#include <fmt/format.h>

#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace pgolf::model {

namespace {

ops::Act parse_activation(const std::string& name) {
  if (name == "relu2") return ops::Act::Relu2;
  if (name == "leaky_relu2") return ops::Act::LeakyRelu2;
  PG_FAIL("model: unknown activation '{}' (expected relu2 or leaky_relu2)", name);
}

void check_config(const ModelConfig& c) {
  PG_CHECK(c.vocab_size > 0 && c.num_layers > 0 && c.model_dim > 0, "model: vocab {}, layers {}, dim {} must be > 0",
           c.vocab_size, c.num_layers, c.model_dim);
  PG_CHECK(c.num_heads > 0 && c.model_dim % c.num_heads == 0, "model: model_dim {} is not a multiple of num_heads {}",
           c.model_dim, c.num_heads);
  PG_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
           "model: num_heads {} is not a multiple of num_kv_heads {}", c.num_heads, c.num_kv_heads);
  PG_CHECK(c.head_dim() % 2 == 0, "model: head_dim {} must be even for RoPE", c.head_dim());
  PG_CHECK(c.rope_dims >= 0 && c.rope_dims <= c.head_dim() && c.rope_dims % 2 == 0,
           "model: rope_dims {} must be even and <= head_dim {}", c.rope_dims, c.head_dim());
  PG_CHECK(c.mlp_hidden() > 0, "model: mlp_mult {} gives no hidden units", c.mlp_mult);
  PG_CHECK(c.tie_embeddings, "model: untied embeddings are not implemented (tie_embeddings = false)");
  PG_CHECK(c.act_dtype == DType::F32 || c.act_dtype == DType::BF16, "model: act_dtype must be f32 or bf16, got {}",
           dtype_name(c.act_dtype));
  parse_activation(c.activation);
}

// Restores an arena's top on every exit path, exceptions included.
struct ArenaScope {
  Arena& arena;
  size_t mark;
  explicit ArenaScope(Arena& a) : arena(a), mark(a.mark()) {}
  ~ArenaScope() { arena.reset(mark); }
};

void check_batch(const char* what, const Tensor& ids, const Tensor& targets, Device dev) {
  PG_CHECK(ids.ndim() == 2 && ids.dtype() == DType::I32 && ids.device() == dev,
           "{}: ids {} must be (B, T) i32 on {}", what, ids.desc(), device_name(dev));
  if (targets.shape().nd == 0) return;
  PG_CHECK(targets.shape() == ids.shape() && targets.dtype() == DType::I32 && targets.device() == dev,
           "{}: targets {} must match ids {}", what, targets.desc(), ids.desc());
}

}  // namespace

GPT::GPT(const ModelConfig& cfg, Device dev) : cfg_(cfg), dev_(dev) {
  check_config(cfg_);
  build_params();
  params_.allocate(dev_, cfg_.act_dtype);
  const int H = cfg_.num_heads, D = cfg_.head_dim();
  std::vector<float> expand(static_cast<size_t>(H) * H * D, 0.f);
  for (int h = 0; h < H; ++h)
    for (int d = 0; d < D; ++d) expand[static_cast<size_t>(h) * H * D + static_cast<size_t>(h) * D + d] = 1.f;
  head_expand_ = Tensor::from_vector(expand, Shape{H, static_cast<int64_t>(H) * D}, dev_);
}

void GPT::build_params() {
  const int64_t V = cfg_.vocab_size, d = cfg_.model_dim, kv = static_cast<int64_t>(cfg_.num_kv_heads) * cfg_.head_dim();
  const int64_t hidden = cfg_.mlp_hidden();
  auto add = [this](std::string name, Shape shape, OptGroup g, QuantRole q, InitKind init, float v = 0.f) {
    params_.add(ParamSpec{std::move(name), shape, g, 1.f, q, init, v});
    return params_.all().size() - 1;
  };
  auto matrix = [&](std::string name, Shape shape, QuantRole q, InitKind init) {
    return add(std::move(name), shape, OptGroup::Muon, q, init);
  };
  auto control = [&](std::string name, Shape shape, InitKind init, float v = 0.f) {
    return add(std::move(name), shape, OptGroup::AdamScalar, QuantRole::Passthrough, init, v);
  };
  tok_emb_ = add("tok_emb.weight", Shape{V, d}, OptGroup::AdamEmbed, QuantRole::Embed, InitKind::Normal,
                 cfg_.tied_embed_init_std);
  if (num_skip_weights() > 0) skip_weights_ = control("skip_weights", Shape{num_skip_weights(), d}, InitKind::Ones);
  for (int i = 0; i < cfg_.num_layers; ++i) {
    const std::string b = fmt::format("blocks.{}.", i);
    BlockParams bp{};
    bp.c_q = matrix(b + "attn.c_q.weight", Shape{d, d}, QuantRole::AttnQ, InitKind::KaimingUniform);
    bp.c_k = matrix(b + "attn.c_k.weight", Shape{kv, d}, QuantRole::AttnK, InitKind::KaimingUniform);
    bp.c_v = matrix(b + "attn.c_v.weight", Shape{kv, d}, QuantRole::AttnV, InitKind::KaimingUniform);
    bp.attn_proj = matrix(b + "attn.proj.weight", Shape{d, d}, QuantRole::AttnO, InitKind::Zeros);
    bp.q_gain = control(b + "attn.q_gain", Shape{cfg_.num_heads}, InitKind::Constant, cfg_.qk_gain_init);
    bp.fc = matrix(b + "mlp.fc.weight", Shape{hidden, d}, QuantRole::MlpUp, InitKind::KaimingUniform);
    bp.mlp_proj = matrix(b + "mlp.proj.weight", Shape{d, hidden}, QuantRole::MlpDown, InitKind::Zeros);
    bp.attn_scale = control(b + "attn_scale", Shape{d}, InitKind::Ones);
    bp.mlp_scale = control(b + "mlp_scale", Shape{d}, InitKind::Ones);
    bp.resid_mix = control(b + "resid_mix", Shape{2, d}, InitKind::FirstRowOnes);
    blocks_.push_back(bp);
  }
}

void GPT::init(uint64_t seed) {
  params_.init(seed);
  params_.zero_grads();
}

// ---------------------------------------------------------------------------------------------
// The forward pass, written once.

Var GPT::forward(Tape& tp, const Tensor& ids) {
  const int64_t B = ids.dim(0), T = ids.dim(1);
  Var x = tp.embedding(ids.view(Shape{B * T}), p(tok_emb_));  // (B*T, d)
  x = tp.rmsnorm(x);
  const Var x0 = x;
  std::vector<Var> skips;  // encoder outputs, consumed LIFO by the decoder
  skips.reserve(static_cast<size_t>(num_encoder_layers()));
  for (int i = 0; i < num_encoder_layers(); ++i) {
    x = block(tp, blocks_[static_cast<size_t>(i)], x, x0, B, T);
    skips.push_back(x);
  }
  for (int j = 0; j < num_decoder_layers(); ++j) {
    if (!skips.empty()) {
      x = tp.add_mul_channel(x, chan_row(p(skip_weights_), j), skips.back());  // x + w_j * skip
      skips.pop_back();
    }
    x = block(tp, blocks_[static_cast<size_t>(num_encoder_layers() + j)], x, x0, B, T);
  }
  x = tp.rmsnorm(x);
  return tp.linear(x, p(tok_emb_));  // (B*T, V) tied head
}

Var GPT::block(Tape& tp, const BlockParams& bp, const Var& x, const Var& x0, int64_t B, int64_t T) {
  Param& mix = p(bp.resid_mix);
  Var x_in = tp.mix_channel(chan_row(mix, 0), x, chan_row(mix, 1), x0);            // (B*T, d)
  Var x1 = tp.add_mul_channel(x_in, chan(p(bp.attn_scale)), attention(tp, bp, tp.rmsnorm(x_in), B, T));
  return tp.add_mul_channel(x1, chan(p(bp.mlp_scale)), mlp(tp, bp, tp.rmsnorm(x1)));
}

Var GPT::attention(Tape& tp, const BlockParams& bp, const Var& n, int64_t B, int64_t T) {
  const int64_t H = cfg_.num_heads, Hkv = cfg_.num_kv_heads, D = cfg_.head_dim(), N = B * T;
  const int rot = cfg_.rope_dims > 0 ? cfg_.rope_dims : static_cast<int>(D);
  Var q = tp.linear(n, p(bp.c_q));  // (N, H*D)
  Var k = tp.linear(n, p(bp.c_k));  // (N, Hkv*D)
  Var v = tp.linear(n, p(bp.c_v));  // (N, Hkv*D)
  q = tp.rmsnorm(tp.view(q, Shape{N * H, D}));  // per-head RMSNorm
  k = tp.rmsnorm(tp.view(k, Shape{N * Hkv, D}));
  q = tp.rope(tp.view(q, Shape{B, T, H, D}), rot, cfg_.rope_base);
  k = tp.rope(tp.view(k, Shape{B, T, Hkv, D}), rot, cfg_.rope_base);
  q = tp.mul_head(tp.view(q, Shape{N, H * D}), p(bp.q_gain), head_expand_);
  ops::AttnParams ap;  // causal, scale 1/sqrt(D)
  Var y = tp.attention(tp.view(q, Shape{B, T, H, D}), k, tp.view(v, Shape{B, T, Hkv, D}), ap);
  return tp.linear(tp.view(y, Shape{N, H * D}), p(bp.attn_proj));  // (N, d)
}

Var GPT::mlp(Tape& tp, const BlockParams& bp, const Var& n) {
  Var h = tp.linear(n, p(bp.fc));  // (N, hidden)
  h = tp.activation(h, parse_activation(cfg_.activation), cfg_.leaky_slope);
  return tp.linear(h, p(bp.mlp_proj));  // (N, d)
}

// ---------------------------------------------------------------------------------------------
// Entry points.

void GPT::forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale, Arena& arena,
                           const Tensor& loss_sum) {
  check_batch("forward_backward", ids, targets, dev_);
  PG_CHECK(arena.device() == dev_, "forward_backward: arena on {} but model on {}", device_name(arena.device()),
           device_name(dev_));
  ArenaScope scope(arena);
  const int64_t N = ids.numel();
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/true);
  Var logits = forward(tp, ids);
  Tensor losses = arena.alloc(Shape{N}, DType::F32, "token losses");
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses, grad_scale);
  if (!arena.measuring()) ops::sum(losses, loss_sum, /*accumulate=*/true);
  tp.backward();
}

void GPT::forward_losses(const Tensor& ids, const Tensor& targets, Arena& arena, const Tensor& losses) {
  check_batch("forward_losses", ids, targets, dev_);
  const int64_t N = ids.numel();
  PG_CHECK(losses.numel() == N && losses.dtype() == DType::F32, "forward_losses: losses {} must be ({}) f32",
           losses.desc(), N);
  ArenaScope scope(arena);
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/false);
  Var logits = forward(tp, ids);
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses.view(Shape{N}), 1.f);
}

void GPT::forward_logits(const Tensor& ids, Arena& arena, const Tensor& logits) {
  check_batch("forward_logits", ids, Tensor(), dev_);
  const Shape want{ids.numel(), cfg_.vocab_size};
  PG_CHECK(logits.shape() == want && logits.dtype() == cfg_.act_dtype, "forward_logits: logits {} must be {} {}",
           logits.desc(), dtype_name(cfg_.act_dtype), want.str());
  ArenaScope scope(arena);
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/false);
  Var z = forward(tp, ids);
  if (!arena.measuring()) ops::copy(z.t, logits);
}

size_t GPT::plan_bytes(int64_t B, int64_t T, bool with_backward) {
  PG_CHECK(B > 0 && T > 0, "plan_bytes: batch ({}, {}) must be positive", B, T);
  Arena probe(dev_, "plan probe");
  probe.begin_measure();
  // Nothing is read in measuring mode, so unbacked tensors stand in for the batch.
  Tensor ids = Tensor::from_blob(nullptr, Shape{B, T}, DType::I32, dev_);
  Tensor none = Tensor::from_blob(nullptr, Shape{1}, DType::F32, dev_);
  if (with_backward) {
    forward_backward(ids, ids, 1.f, probe, none);
  } else {
    Tensor losses = Tensor::from_blob(nullptr, Shape{B * T}, DType::F32, dev_);
    forward_losses(ids, ids, probe, losses);
  }
  return probe.end_measure();
}

}  // namespace pgolf::model
