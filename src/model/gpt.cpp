// The GPT family (TECHNIQUES.md §4.1-4.2 and §5): parameters, init and the entry points. The
// forward itself is in gpt_forward.cpp, the configuration checks in model_config.cpp. Parameter
// names and shapes are those of the reference PyTorch module so safetensors files interchange.
#include "model/gpt.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace pgolf::model {

namespace {

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

GPT::GPT(const ModelConfig& cfg, Device dev, SpecsOnly) : cfg_(cfg), dev_(dev) {
  check_model_config(cfg_);
  build_params();
}

GPT::GPT(const ModelConfig& cfg, Device dev) : GPT(cfg, dev, SpecsOnly{}) {
  params_.allocate(dev_, cfg_.act_dtype);
  const int H = cfg_.num_heads, D = cfg_.head_dim();
  const int64_t d = cfg_.model_dim;
  std::vector<float> expand(static_cast<size_t>(H) * H * D, 0.f);
  for (int h = 0; h < H; ++h)
    for (int k = 0; k < D; ++k) expand[static_cast<size_t>(h) * H * D + static_cast<size_t>(h) * D + k] = 1.f;
  head_expand_ = Tensor::from_vector(expand, Shape{H, static_cast<int64_t>(H) * D}, dev_);
  ones_d_ = Tensor::from_vector(std::vector<float>(static_cast<size_t>(d), 1.f), Shape{d}, dev_);
  row_expand_ = ones_d_.view(Shape{1, d});
  if (cfg_.ln_scale) {
    ln_scales_.resize(static_cast<size_t>(cfg_.num_layers));
    for (int l = 0; l < cfg_.num_layers; ++l) {
      Param& s = ln_scales_[static_cast<size_t>(l)];
      s.spec = ParamSpec{fmt::format("ln_scale.{}", l), Shape{1}};
      s.value = Tensor::from_vector(std::vector<float>{ln_scale_value(l)}, Shape{1}, dev_);  // grad undefined: a constant
    }
  }
  // A fresh model is in its final (looped) state, the one evaluation and checkpoint loaders need;
  // the trainer's set_training_fraction switches looping off until loop_enable_frac.
  loop_passes_on_ = cfg_.has_loop() ? cfg_.loop_passes : 0;
}

ParamTable GPT::describe(const ModelConfig& cfg) { return GPT(cfg, Device::CPU, SpecsOnly{}).params_; }

int GPT::num_skip_weights() const {
  if (!cfg_.unet) return 0;  // a plain stack (seed #1672): no skips
  const int n = static_cast<int>(layer_schedule(cfg_, cfg_.has_loop()).size());
  return std::min(n / 2, n - n / 2);
}

void GPT::set_training_fraction(double frac) { loop_passes_on_ = loop_passes_at(cfg_, frac); }

void GPT::set_looping(bool on) {
  PG_CHECK(!on || cfg_.has_loop(), "set_looping: the model has no loop segment (loop_passes = {}, loop_start = {})",
           cfg_.loop_passes, cfg_.loop_start);
  loop_passes_on_ = on ? cfg_.loop_passes : 0;
}

void GPT::set_loop_passes(int passes) {
  const int most = cfg_.has_loop() ? cfg_.loop_passes : 0;
  PG_CHECK(passes >= 0 && passes <= most, "set_loop_passes: {} extra passes, the model has 0..{}", passes, most);
  loop_passes_on_ = passes;
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
  if (num_skip_weights() > 0) {
    skip_weights_ = control("skip_weights", Shape{num_skip_weights(), d}, InitKind::Ones);
    if (cfg_.skip_gates) skip_gates_ = control("skip_gates", Shape{num_skip_weights(), d}, InitKind::Zeros);
  }
  // §5.12: one zero-init vector per pass of the loop segment (pass 0 is the plain visit).
  if (cfg_.loop_embeddings) loop_emb_ = control("loop_embeddings", Shape{cfg_.loop_passes + 1, d}, InitKind::Zeros);
  const std::vector<bool> xsa = parse_layer_set(cfg_.xsa_layers, cfg_.num_layers, "xsa_layers");  // §5.7
  const std::vector<bool> gdn = parse_layer_set(cfg_.gdn_layers, cfg_.num_layers, "gdn_layers");  // §5.18
  int first_attn = -1;  // §5.17 share_attention: the layer whose attention module the others run
  for (int i = 0; i < cfg_.num_layers; ++i) {
    const std::string b = fmt::format("blocks.{}.", i);
    BlockParams bp{};
    bp.xsa = xsa[static_cast<size_t>(i)];
    if (gdn[static_cast<size_t>(i)]) {  // a GatedDeltaNet token mixer instead of attention (gdn_layer.h)
      bp.gdn = static_cast<int>(gdn_.size());
      gdn_.push_back(add_gdn_params(params_, cfg_, i));
    } else if (cfg_.share_attention && first_attn >= 0) {  // §5.17: the same module, own norms/scales/MLP
      const BlockParams& s = blocks_[static_cast<size_t>(first_attn)];
      bp.c_q = s.c_q, bp.c_k = s.c_k, bp.c_v = s.c_v, bp.attn_proj = s.attn_proj, bp.q_gain = s.q_gain;
    } else {
    if (first_attn < 0) first_attn = i;
    bp.c_q = matrix(b + "attn.c_q.weight", Shape{d, d}, QuantRole::AttnQ, InitKind::KaimingUniform);
    bp.c_k = matrix(b + "attn.c_k.weight", Shape{kv, d}, QuantRole::AttnK, InitKind::KaimingUniform);
    bp.c_v = matrix(b + "attn.c_v.weight", Shape{kv, d}, QuantRole::AttnV, InitKind::KaimingUniform);
    bp.attn_proj = matrix(b + "attn.proj.weight", Shape{d, d}, QuantRole::AttnO, InitKind::Zeros);
    bp.q_gain = control(b + "attn.q_gain", Shape{cfg_.num_heads}, InitKind::Constant, cfg_.qk_gain_init);
    }
    bp.fc = matrix(b + "mlp.fc.weight", Shape{hidden, d}, QuantRole::MlpUp, InitKind::KaimingUniform);
    bp.mlp_proj = matrix(b + "mlp.proj.weight", Shape{d, hidden}, QuantRole::MlpDown, InitKind::Zeros);
    bp.attn_scale = control(b + "attn_scale", Shape{d}, InitKind::Ones);
    bp.mlp_scale = control(b + "mlp_scale", Shape{d}, InitKind::Ones);
    bp.resid_mix = control(b + "resid_mix", Shape{2, d}, InitKind::FirstRowOnes);
    blocks_.push_back(bp);
  }
  build_extra_params();  // the optional record-stack modules (gpt_extra.cpp, gpt_extra2.cpp)
}

void GPT::init(uint64_t seed) {
  params_.init(seed);
  params_.zero_grads();
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
  std::vector<SkipGateMix> gates;
  begin_grad_ready(!arena.measuring());
  Var logits = forward(tp, ids, &gates);
  end_grad_ready_forward();
  Tensor losses = arena.alloc(Shape{N}, DType::F32, "token losses");
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses, grad_scale);
  if (!arena.measuring()) ops::sum(losses, loss_sum, /*accumulate=*/true);
  tp.backward();
  apply_skip_gate_grads(gates, arena);
  if (grad_ready_ && !arena.measuring()) report_bucket(-1);  // everything the blocks' markers did not report
}

void GPT::forward_losses(const Tensor& ids, const Tensor& targets, Arena& arena, const Tensor& losses) {
  check_batch("forward_losses", ids, targets, dev_);
  const int64_t N = ids.numel();
  PG_CHECK(losses.numel() == N && losses.dtype() == DType::F32, "forward_losses: losses {} must be ({}) f32",
           losses.desc(), N);
  ArenaScope scope(arena);
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/false);
  Var logits = forward(tp, ids, nullptr);
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses.view(Shape{N}), 1.f);
}

void GPT::forward_losses_tail(const Tensor& ids, const Tensor& targets, int64_t tail, Arena& arena,
                              const Tensor& losses) {
  check_batch("forward_losses_tail", ids, Tensor(), dev_);
  PG_CHECK(tail > 0 && tail <= ids.dim(1), "forward_losses_tail: tail {} must be in [1, T] of ids {}",
           tail, ids.desc());
  const int64_t B = ids.dim(0), N = B * tail;
  PG_CHECK(targets.numel() == N && targets.dtype() == DType::I32 && targets.device() == dev_,
           "forward_losses_tail: targets {} must be ({}, {}) i32 on the model's device", targets.desc(), B, tail);
  PG_CHECK(losses.numel() == N && losses.dtype() == DType::F32, "forward_losses_tail: losses {} must be ({}) f32",
           losses.desc(), N);
  ArenaScope scope(arena);
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/false);
  struct Reset {
    int64_t& v;
    ~Reset() { v = 0; }
  } reset{head_tail_};
  head_tail_ = tail;
  Var logits = forward(tp, ids, nullptr);
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses.view(Shape{N}), 1.f);
}

void GPT::forward_logits(const Tensor& ids, Arena& arena, const Tensor& logits) {
  check_batch("forward_logits", ids, Tensor(), dev_);
  const Shape want{ids.numel(), cfg_.vocab_size};
  PG_CHECK(logits.shape() == want && logits.dtype() == cfg_.act_dtype, "forward_logits: logits {} must be {} {}",
           logits.desc(), dtype_name(cfg_.act_dtype), want.str());
  ArenaScope scope(arena);
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/false);
  Var z = forward(tp, ids, nullptr);
  if (!arena.measuring()) ops::copy(z.t, logits);
}

size_t GPT::measure_peak(int64_t B, int64_t T, bool step) {
  PG_CHECK(B > 0 && T > 0, "plan_bytes: batch ({}, {}) must be positive", B, T);
  // The looped list (when configured) is the larger graph: plan for it, whatever the current state.
  const int was_on = loop_passes_on_;
  loop_passes_on_ = cfg_.has_loop() ? cfg_.loop_passes : 0;
  struct Restore {
    int& passes;
    int value;
    ~Restore() { passes = value; }
  } restore{loop_passes_on_, was_on};
  Arena probe(dev_, "plan probe");
  probe.begin_measure();
  // Nothing is read in measuring mode, so unbacked tensors stand in for the batch.
  Tensor ids = Tensor::from_blob(nullptr, Shape{B, T}, DType::I32, dev_);
  if (step) {
    forward_backward(ids, ids, 1.f, probe, Tensor::from_blob(nullptr, Shape{1}, DType::F32, dev_));
  } else {
    forward_losses(ids, ids, probe, Tensor::from_blob(nullptr, Shape{B * T}, DType::F32, dev_));
  }
  return probe.end_measure();
}

size_t GPT::plan_bytes(int64_t B, int64_t T, bool with_backward) {
  const size_t forward_only = measure_peak(B, T, /*step=*/false);
  if (!with_backward) return forward_only;
  // A training arena also serves forward-only passes of the same batch (validation, logits, finite
  // differences), whose peak can exceed the step's: the step frees activations as it goes, a
  // forward-only pass keeps them to its end.
  return std::max(forward_only, measure_peak(B, T, /*step=*/true));
}

size_t GPT::step_plan_bytes(int64_t B, int64_t T) { return measure_peak(B, T, /*step=*/true); }

}  // namespace pgolf::model
