// Second batch of record-stack modules of the GPT (TECHNIQUES.md §5): BigramHash embedding (§5.9),
// value embeddings (§5.10), value residual learning (§5.11) and the attention output gates (§5.14).
// Each is off by default; off, the forward is exactly the baseline's.
#include <fmt/format.h>

#include "model/gpt.h"
#include "model/tape.h"
#include "ops/bigram.h"

namespace pgolf::model {

namespace {

// The gate's amplitude and logit scale (§5.14): g = amp * sigmoid(c * W n[0:w]).
struct GateForm {
  float amp, c;
};
GateForm gate_form(const ModelConfig& cfg) {
  if (cfg.attn_gate == "out") return {2.f, 1.f};
  if (cfg.attn_gate == "sparse") return {1.f, cfg.attn_gate_scale};
  return {1.f, 1.f};  // dense
}

int attn_gate_width(const ModelConfig& cfg) {
  return cfg.attn_gate == "dense" ? cfg.model_dim : cfg.attn_gate_window;
}

}  // namespace

void GPT::build_extra2_params() {
  auto add = [this](std::string name, Shape shape, OptGroup g, QuantRole q, InitKind init, float v = 0.f) {
    params_.add(ParamSpec{std::move(name), shape, g, 1.f, q, init, v});
    return params_.all().size() - 1;
  };
  auto scalar = [&](std::string name, float v) {
    return add(std::move(name), Shape{1}, OptGroup::AdamScalar, QuantRole::Passthrough, InitKind::Constant, v);
  };
  const int64_t d = cfg_.model_dim, kv = static_cast<int64_t>(cfg_.num_kv_heads) * cfg_.head_dim();
  for (size_t i = 0; i < blocks_.size(); ++i) blocks_[i].index = static_cast<int>(i);
  if (cfg_.bigram_buckets > 0) {
    // §5.9 (R:2026-03-25+ form): zero table, scale 0.05. A zero projection as well would be a fixed
    // point (neither gets a gradient); the records' orthogonal-init pass re-initialises it.
    bigram_table_ = add("bigram.embed.weight", Shape{cfg_.bigram_buckets, cfg_.bigram_dim}, OptGroup::AdamEmbed,
                        QuantRole::Embed, InitKind::Zeros);
    bigram_proj_ = add("bigram.proj.weight", Shape{d, cfg_.bigram_dim}, OptGroup::Muon, QuantRole::AttnO,
                       InitKind::Orthogonal);
    bigram_scale_ = scalar("bigram.scale", 0.05f);
  }
  if (cfg_.ve_dim > 0) {
    // §5.10: shared table N(0, 0.01^2), zero projection, global scale 0.1, per-layer scales 1.
    ve_table_ = add("ve_shared.embed.weight", Shape{cfg_.vocab_size, cfg_.ve_dim}, OptGroup::AdamEmbed,
                    QuantRole::Embed, InitKind::Normal, 0.01f);
    ve_proj_ = add("ve_shared.proj.weight", Shape{kv, cfg_.ve_dim}, OptGroup::Muon, QuantRole::AttnV, InitKind::Zeros);
    ve_gain_ = scalar("ve_shared.scale", 0.1f);
    const std::vector<bool> on = parse_layer_set(cfg_.ve_layers, cfg_.num_layers, "ve_layers");
    int k = 0;
    for (size_t i = 0; i < blocks_.size(); ++i)
      if (on[i]) blocks_[i].ve_scale = scalar(fmt::format("ve_layer_scales.{}", k++), 1.f);
  }
  if (cfg_.value_residual)
    for (size_t i = 1; i < blocks_.size(); ++i)
      blocks_[i].vrl = scalar(fmt::format("blocks.{}.attn.vrl_alpha", i), cfg_.vrl_init);
  if (cfg_.attn_gate != "none") {
    const bool dense = cfg_.attn_gate == "dense";
    for (size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].attn_gate = add(fmt::format("blocks.{}.attn.attn_gate_w", i), Shape{cfg_.num_heads, attn_gate_width(cfg_)},
                                 OptGroup::AdamScalar, QuantRole::Gate, dense ? InitKind::Normal : InitKind::Zeros,
                                 dense ? 0.005f : 0.f);
  }
}

Var GPT::embed_extras(Tape& tp, const Var& e, const Tensor& ids) {
  ve_node_ = v0_node_ = -2;
  ve_t_ = v0_t_ = Tensor();
  const int64_t N = ids.numel();
  const ChanParam one{ones_d_.slice(0, 1), Tensor()};  // a constant weight 1
  Var x = e;
  if (cfg_.bigram_buckets > 0) {
    // Bucket ids from the Arena: the embedding's backward reads them.
    Tensor buckets = tp.arena().alloc(ids.shape(), DType::I32, "bigram buckets");
    if (!tp.measuring()) ops::bigram_hash(ids, cfg_.bigram_buckets, buckets);
    Var rows = tp.embedding(buckets.view(Shape{N}), p(bigram_table_));  // (N, d_b)
    if (cfg_.bigram_trigram) {
      // §5.9 trigram: a second row of the same table, summed before the projection (P applies to both).
      Tensor tri = tp.arena().alloc(ids.shape(), DType::I32, "trigram buckets");
      if (!tp.measuring()) ops::trigram_hash(ids, cfg_.bigram_buckets, tri);
      const Var rows3 = tp.embedding(tri.view(Shape{N}), p(bigram_table_));
      rows = tp.scalar_mix({{one, rows}, {one, rows3}}, tp.act_dtype());
    }
    Var b = tp.linear(rows, p(bigram_proj_));  // (N, d)
    x = tp.scalar_mix({{one, x}, {scalar_at(p(bigram_scale_), 0), b}}, tp.act_dtype());
  }
  if (cfg_.ve_dim > 0) {
    Var ve = tp.linear(tp.embedding(ids.view(Shape{N}), p(ve_table_)), p(ve_proj_));  // (N, kv)
    ve = tp.scalar_mix({{scalar_at(p(ve_gain_), 0), ve}}, tp.act_dtype());
    ve_t_ = ve.t;
    ve_node_ = ve.node;
  }
  return x;
}

Var GPT::value_extras(Tape& tp, const BlockParams& bp, const Var& v) {
  Var out = v;
  if (bp.ve_scale != 0) {
    PG_CHECK(ve_node_ != -2, "value_extras: no value embedding prepared for this batch");
    const ChanParam one{ones_d_.slice(0, 1), Tensor()};
    out = tp.scalar_mix({{one, out}, {scalar_at(p(bp.ve_scale), 0), Var{ve_t_, ve_node_}}}, tp.act_dtype());
  }
  if (cfg_.value_residual) {
    if (bp.index == 0) {
      v0_t_ = v.t;  // layer 0's raw projection, before any value embedding (§5.11)
      v0_node_ = v.node;
    } else {
      PG_CHECK(v0_node_ != -2, "value_residual: layer {} runs before layer 0 stored its values", bp.index);
      out = tp.sigmoid_lerp(scalar_at(p(bp.vrl), 0), out, Var{v0_t_, v0_node_});
    }
  }
  return out;
}

Var GPT::out_gate(Tape& tp, const BlockParams& bp, const Var& n, const Var& y) {
  if (bp.attn_gate == 0) return y;
  const Shape& s = y.shape();  // (B, T, H, D)
  const GateForm f = gate_form(cfg_);
  const Var g = tp.attn_gate(n, p(bp.attn_gate), tp.view(y, Shape{s[0] * s[1], s[2], s[3]}), f.amp, f.c);
  return tp.view(g, s);
}

}  // namespace pgolf::model
