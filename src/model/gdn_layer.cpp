// The GatedDeltaNet token mixer (TECHNIQUES.md §5.18; docs/GDN.md): parameters and forward on the tape. The
// backward comes from the tape ops of tape_gdn.cpp (short conv, head L2 norm, gates, chunked delta rule, SiLU
// output gate) and the existing linear / rmsnorm.
#include "model/gdn_layer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/gpt.h"
#include "model/tape.h"

namespace pgolf::model {

GdnParams add_gdn_params(ParamTable& t, const ModelConfig& cfg, int layer) {
  const int64_t d = cfg.model_dim, H = cfg.num_heads, C = H * cfg.head_dim(), K = cfg.gdn_conv_size;
  const std::string pre = fmt::format("blocks.{}.gdn.", layer);
  auto add = [&](const char* name, Shape shape, OptGroup g, float wd, QuantRole q, InitKind init, float v = 0.f) {
    t.add(ParamSpec{pre + name, shape, g, wd, q, init, v});
    return t.all().size() - 1;
  };
  auto matrix = [&](const char* name, Shape shape, QuantRole q, InitKind init) {
    return add(name, shape, OptGroup::Muon, 1.f, q, init);
  };
  GdnParams p;
  // The d x d projections are quantised like attention's (W_g with the q role: an input projection);
  // W_a, W_b (H x d) like the small gate tensors (int8 per row, §7.9). W_o starts at zero like every
  // output projection, so a fresh block is the identity (§5.19).
  p.q = matrix("q_proj.weight", Shape{C, d}, QuantRole::AttnQ, InitKind::KaimingUniform);
  p.k = matrix("k_proj.weight", Shape{C, d}, QuantRole::AttnK, InitKind::KaimingUniform);
  p.v = matrix("v_proj.weight", Shape{C, d}, QuantRole::AttnV, InitKind::KaimingUniform);
  p.a = matrix("a_proj.weight", Shape{H, d}, QuantRole::Gate, InitKind::KaimingUniform);
  p.b = matrix("b_proj.weight", Shape{H, d}, QuantRole::Gate, InitKind::KaimingUniform);
  p.g = matrix("g_proj.weight", Shape{C, d}, QuantRole::AttnQ, InitKind::KaimingUniform);
  p.o = matrix("o_proj.weight", Shape{d, C}, QuantRole::AttnO, InitKind::Zeros);
  // Depthwise conv weights: U(-1/sqrt(K), 1/sqrt(K)) (KaimingUniform over the (C, K) shape), PyTorch's
  // Conv1d default. Adam scalar group, kept unquantised.
  p.conv_q = add("q_conv1d.weight", Shape{C, K}, OptGroup::AdamScalar, 1.f, QuantRole::Passthrough,
                 InitKind::KaimingUniform);
  p.conv_k = add("k_conv1d.weight", Shape{C, K}, OptGroup::AdamScalar, 1.f, QuantRole::Passthrough,
                 InitKind::KaimingUniform);
  p.conv_v = add("v_conv1d.weight", Shape{C, K}, OptGroup::AdamScalar, 1.f, QuantRole::Passthrough,
                 InitKind::KaimingUniform);
  // §5.18: A_log = log U(0, 16), dt_bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1]; never decayed.
  p.A_log = add("A_log", Shape{H}, OptGroup::AdamScalar, 0.f, QuantRole::Passthrough, InitKind::LogUniform, 16.f);
  p.dt_bias = add("dt_bias", Shape{H}, OptGroup::AdamScalar, 0.f, QuantRole::Passthrough,
                  InitKind::InvSoftplusLogUniformDt);
  return p;
}

Var gdn_mixer(Tape& tp, const ParamAt& P, const GdnParams& gp, const ModelConfig& cfg, const Var& n, int64_t B,
              int64_t T) {
  const int64_t H = cfg.num_heads, D = cfg.head_dim(), C = H * D, N = B * T;
  // Projection, then the short causal convolution with SiLU over each row of T tokens: (B, T, C).
  auto conv = [&](size_t w, size_t cw) {
    const Var x = tp.linear(n, P(w));  // (N, C)
    return tp.short_conv(tp.view(x, Shape{B, T, C}), P(cw), /*silu=*/true);
  };
  const Shape heads{B, T, H, D}, per_head{B, T, H};
  const Var q = tp.l2norm_heads(tp.view(conv(gp.q, gp.conv_q), heads), 1.f / std::sqrt(static_cast<float>(D)));
  const Var k = tp.l2norm_heads(tp.view(conv(gp.k, gp.conv_k), heads), 1.f);
  const Var v = tp.view(conv(gp.v, gp.conv_v), heads);
  const Var a = tp.linear(n, P(gp.a)), bb = tp.linear(n, P(gp.b));  // (N, H) each
  const auto [g, beta] = tp.gdn_gates(tp.view(a, per_head), tp.view(bb, per_head), P(gp.A_log), P(gp.dt_bias),
                                      cfg.gdn_neg_eigval ? 2.f : 1.f);
  const Var o = tp.gdn_chunk(q, k, v, g, beta, cfg.gdn_chunk);  // (B, T, H, D)
  const Var on = tp.rmsnorm(o);                                 // per head over D (no weight)
  tp.release(o);  // no backward reads o itself (the norm's reads its output)
  const Var z = tp.linear(n, P(gp.g));                          // (N, C)
  const Var y = tp.silu_gate(tp.view(on, Shape{N, C}), z);      // RMSNorm_head(o) * SiLU(W_g n)
  return tp.linear(y, P(gp.o));                                 // (N, d)
}

void check_gdn_config(const ModelConfig& c) {
  PG_CHECK(c.attn_window >= 0, "model: attn_window {} must be >= 0 (0 = full causal attention)", c.attn_window);
  PG_CHECK(c.unet || !c.skip_gates, "model: skip_gates = true needs unet = true (the gates belong to the U-Net skips)");
  const std::vector<bool> gdn = parse_layer_set(c.gdn_layers, c.num_layers, "gdn_layers");  // throws on a bad list
  const bool any = std::find(gdn.begin(), gdn.end(), true) != gdn.end();
  if (!any) return;
  PG_CHECK(c.gdn_conv_size >= 1 && c.gdn_conv_size <= 16, "model: gdn_conv_size {} must be in 1..16 (the seed: 4)",
           c.gdn_conv_size);
  PG_CHECK(c.gdn_chunk >= 1 && c.gdn_chunk <= 256, "model: gdn_chunk {} must be in 1..256 (the seed: 64)",
           c.gdn_chunk);
  // The per-layer attention modules below have no GDN counterpart: refuse rather than silently skip them.
  const std::vector<bool> xsa = parse_layer_set(c.xsa_layers, c.num_layers, "xsa_layers");
  const std::vector<bool> ve = parse_layer_set(c.ve_layers, c.num_layers, "ve_layers");
  for (int l = 0; l < c.num_layers; ++l) {
    if (!gdn[static_cast<size_t>(l)]) continue;
    PG_CHECK(!xsa[static_cast<size_t>(l)], "model: layer {} is in both gdn_layers '{}' and xsa_layers '{}' (XSA is an "
             "attention-only switch)", l, c.gdn_layers, c.xsa_layers);
    PG_CHECK(!ve[static_cast<size_t>(l)], "model: layer {} is in both gdn_layers '{}' and ve_layers '{}' (value "
             "embeddings are an attention-only switch)", l, c.gdn_layers, c.ve_layers);
  }
  PG_CHECK(c.attn_gate == "none", "model: attn_gate = '{}' is not implemented together with gdn_layers", c.attn_gate);
  PG_CHECK(!c.value_residual, "model: value_residual is not implemented together with gdn_layers");
}

}  // namespace pgolf::model
