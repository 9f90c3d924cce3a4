// ModelConfig helpers: the virtual layer list of depth recurrence (§5.12), layer-set parsing
// (XSA layers, §5.7) and the configuration checks.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "model/gpt.h"

namespace pgolf::model {

std::vector<int> layer_schedule(const ModelConfig& c, bool looping) {
  return layer_schedule_passes(c, looping ? c.loop_passes : 0);
}

std::vector<int> layer_schedule_passes(const ModelConfig& c, int passes) {
  std::vector<int> out;
  if (passes <= 0 || !c.has_loop()) {
    for (int l = 0; l < c.num_layers; ++l) out.push_back(l);
    return out;
  }
  PG_CHECK(passes <= c.loop_passes, "layer_schedule: {} extra passes of a loop with {}", passes, c.loop_passes);
  for (int l = 0; l < c.loop_start; ++l) out.push_back(l);
  for (int pass = 0; pass <= passes; ++pass)
    for (int l = c.loop_start; l <= c.loop_end; ++l) out.push_back(l);
  for (int l = c.loop_end + 1; l < c.num_layers; ++l) out.push_back(l);
  return out;
}

std::vector<double> parse_loop_pass_fracs(const ModelConfig& c) {
  std::vector<double> out;
  const std::string& spec = c.loop_pass_fracs;
  if (spec.empty()) return out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    double v = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    PG_CHECK(ec == std::errc() && end == item.data() + item.size() && !item.empty(),
             "model: loop_pass_fracs = '{}': '{}' is not a number (expected a list like \"0.5,0.65\")", spec, item);
    PG_CHECK(v >= 0.0 && v <= 1.0, "model: loop_pass_fracs = '{}': {} is outside [0, 1]", spec, v);
    PG_CHECK(out.empty() || v >= out.back(), "model: loop_pass_fracs = '{}' must be non-decreasing ({} after {})", spec,
             v, out.back());
    out.push_back(v);
    pos = comma + 1;
  }
  PG_CHECK(static_cast<int>(out.size()) == c.loop_passes,
           "model: loop_pass_fracs = '{}' has {} fractions but loop_passes = {} (one per extra pass)", spec, out.size(),
           c.loop_passes);
  return out;
}

int loop_passes_at(const ModelConfig& c, double frac) {
  if (!c.has_loop()) return 0;
  const std::vector<double> fracs = parse_loop_pass_fracs(c);
  if (fracs.empty()) return frac >= static_cast<double>(c.loop_enable_frac) ? c.loop_passes : 0;
  int on = 0;
  for (double f : fracs) on += frac >= f ? 1 : 0;
  return on;
}

std::vector<bool> parse_layer_set(const std::string& spec, int num_layers, const char* key) {
  std::vector<bool> set(static_cast<size_t>(num_layers), false);
  if (spec.empty()) return set;
  if (spec == "all") return std::vector<bool>(static_cast<size_t>(num_layers), true);
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = spec.substr(pos, comma - pos);
    int layer = -1;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), layer);
    PG_CHECK(ec == std::errc() && end == item.data() + item.size() && !item.empty(),
             "model: {} = '{}': '{}' is not a layer index (expected \"\", \"all\" or a list like \"0,3,7\")", key,
             spec, item);
    PG_CHECK(layer >= 0 && layer < num_layers, "model: {} = '{}': layer {} is outside 0..{}", key, spec, layer,
             num_layers - 1);
    set[static_cast<size_t>(layer)] = true;
    pos = comma + 1;
  }
  return set;
}

void check_model_config(const ModelConfig& c) {
  PG_CHECK(c.vocab_size > 0 && c.num_layers > 0 && c.model_dim > 0, "model: vocab {}, layers {}, dim {} must be > 0",
           c.vocab_size, c.num_layers, c.model_dim);
  PG_CHECK(c.num_heads > 0 && c.model_dim % c.num_heads == 0, "model: model_dim {} is not a multiple of num_heads {}",
           c.model_dim, c.num_heads);
  PG_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
           "model: num_heads {} is not a multiple of num_kv_heads {}", c.num_heads, c.num_kv_heads);
  PG_CHECK(c.head_dim() % 2 == 0, "model: head_dim {} must be even for RoPE", c.head_dim());
  PG_CHECK(c.rope_dims >= 0 && c.rope_dims <= c.head_dim() && c.rope_dims % 2 == 0,
           "model: rope_dims {} must be even and <= head_dim {}", c.rope_dims, c.head_dim());
  PG_CHECK(c.mlp_mult > 0 && c.mlp_hidden() > 0, "model: mlp_mult {} gives no hidden units", c.mlp_mult);
  PG_CHECK(c.tie_embeddings, "model: untied embeddings are not implemented (tie_embeddings = false)");
  PG_CHECK(c.act_dtype == DType::F32 || c.act_dtype == DType::BF16, "model: act_dtype must be f32 or bf16, got {}",
           dtype_name(c.act_dtype));
  PG_CHECK(c.activation == "relu2" || c.activation == "leaky_relu2",
           "model: unknown activation '{}' (expected relu2 or leaky_relu2)", c.activation);
  PG_CHECK(c.parallel_residual == "none" || c.parallel_residual == "gptj" || c.parallel_residual == "two_lane",
           "model: parallel_residual '{}' is not one of none, gptj, two_lane", c.parallel_residual);
  PG_CHECK(c.parallel_start >= 0, "model: parallel_start {} must be >= 0", c.parallel_start);
  PG_CHECK(c.loop_passes >= 0, "model: loop_passes {} must be >= 0", c.loop_passes);
  if (c.loop_passes > 0) {
    PG_CHECK(c.loop_start >= 0 && c.loop_start <= c.loop_end && c.loop_end < c.num_layers,
             "model: loop segment [{}, {}] must satisfy 0 <= loop_start <= loop_end < num_layers {}", c.loop_start,
             c.loop_end, c.num_layers);
  }
  PG_CHECK(!c.loop_embeddings || (c.loop_passes > 0 && c.loop_start >= 0),
           "model: loop_embeddings = true needs a loop (loop_passes > 0 and loop_start >= 0), got loop_passes {}",
           c.loop_passes);
  PG_CHECK(c.loop_enable_frac >= 0.f && c.loop_enable_frac <= 1.f, "model: loop_enable_frac {} must be in [0, 1]",
           c.loop_enable_frac);
  if (!c.loop_pass_fracs.empty()) {
    PG_CHECK(c.has_loop(), "model: loop_pass_fracs = '{}' needs a loop (loop_passes > 0 and loop_start >= 0)",
             c.loop_pass_fracs);
    (void)parse_loop_pass_fracs(c);  // throws on a bad list
  }
  PG_CHECK(c.smear_gate == "none" || c.smear_gate == "v1" || c.smear_gate == "v2",
           "model: smear_gate '{}' is not one of none, v1, v2", c.smear_gate);
  if (c.smear_gate == "v2")
    PG_CHECK(c.smear_window >= 1 && c.smear_window <= 32 && c.smear_window <= c.model_dim,
             "model: smear_window {} must be in 1..min(32, model_dim {})", c.smear_window, c.model_dim);
  (void)parse_layer_set(c.xsa_layers, c.num_layers, "xsa_layers");  // throws on a bad list
  if (c.xsa_layers != "") PG_CHECK(c.head_dim() <= 256, "model: XSA supports head_dim <= 256, got {}", c.head_dim());
  // Second batch (gpt_extra2.cpp): attention output gates (§5.14), VRL (§5.11), value embeddings
  // (§5.10), BigramHash (§5.9).
  PG_CHECK(c.attn_gate == "none" || c.attn_gate == "out" || c.attn_gate == "dense" || c.attn_gate == "sparse",
           "model: attn_gate '{}' is not one of none, out, dense, sparse", c.attn_gate);
  if (c.attn_gate != "none") {
    const int w = c.attn_gate == "dense" ? c.model_dim : c.attn_gate_window;
    PG_CHECK(c.attn_gate_window >= 1 && c.attn_gate_window <= c.model_dim,
             "model: attn_gate_window {} must be in 1..model_dim {}", c.attn_gate_window, c.model_dim);
    PG_CHECK(c.num_heads <= 64 && static_cast<int64_t>(c.num_heads) * w <= 8192,
             "model: attn_gate '{}' needs num_heads <= 64 and num_heads * gate width <= 8192 (got {} x {})",
             c.attn_gate, c.num_heads, w);
    PG_CHECK(std::isfinite(c.attn_gate_scale) && c.attn_gate_scale > 0.f,
             "model: attn_gate_scale {} must be a positive number", c.attn_gate_scale);
  }
  if (c.value_residual) {
    PG_CHECK(c.num_layers >= 2, "model: value_residual needs at least 2 layers (got {})", c.num_layers);
    PG_CHECK(std::isfinite(c.vrl_init), "model: vrl_init {} must be finite", c.vrl_init);
  }
  PG_CHECK(c.ve_dim >= 0, "model: ve_dim {} must be >= 0 (0 = no value embeddings)", c.ve_dim);
  {
    const std::vector<bool> ve = parse_layer_set(c.ve_layers, c.num_layers, "ve_layers");  // throws on a bad list
    const bool any = std::find(ve.begin(), ve.end(), true) != ve.end();
    PG_CHECK(c.ve_dim == 0 || any, "model: ve_dim = {} but ve_layers is empty (name the layers, e.g. \"9,10\")",
             c.ve_dim);
    PG_CHECK(c.ve_dim > 0 || !any, "model: ve_layers = '{}' but ve_dim = 0 (set ve_dim, e.g. 128)", c.ve_layers);
  }
  PG_CHECK(c.bigram_buckets == 0 || c.bigram_buckets >= 2,
           "model: bigram_buckets {} must be 0 (off) or >= 2", c.bigram_buckets);
  if (c.bigram_buckets > 0)
    PG_CHECK(c.bigram_dim >= 1, "model: bigram_dim {} must be >= 1", c.bigram_dim);
  PG_CHECK(!c.bigram_trigram || c.bigram_buckets > 0,
           "model: bigram_trigram = true looks the trigram up in the BigramHash table: set bigram_buckets (e.g. 3072)");
  check_gdn_config(c);  // GatedDeltaNet hybrid keys (gdn_layer.cpp)
  if (c.doc_isolated || c.smear_gate == "v2")
    PG_CHECK(c.bos_id >= 0 && c.bos_id < c.vocab_size, "model: bos_id {} is outside the vocabulary 0..{}", c.bos_id,
             c.vocab_size - 1);
}

}  // namespace pgolf::model
