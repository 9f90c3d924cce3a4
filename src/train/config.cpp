#include "train/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <variant>

#include <toml++/toml.h>

#include "core/error.h"

namespace pgolf::train {
namespace {

enum class Kind { Int, Float, Bool, String };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Int: return "integer";
    case Kind::Float: return "number";
    case Kind::Bool: return "boolean";
    case Kind::String: return "string";
  }
  return "?";
}

using Value = std::variant<int64_t, double, bool, std::string>;

// One schema entry: where the value lives in Config and how to read/write it.
struct Field {
  std::string section, key;
  Kind kind;
  std::function<Value(const Config&)> get;
  std::function<void(Config&, const Value&)> set;
  std::string full() const { return section + "." + key; }
};

template <class T> Kind kind_of() {
  if constexpr (std::is_same_v<T, bool>) return Kind::Bool;
  else if constexpr (std::is_integral_v<T>) return Kind::Int;
  else if constexpr (std::is_floating_point_v<T>) return Kind::Float;
  else return Kind::String;
}

// Builds a Field from an accessor returning a reference to the member.
template <class Access>
Field field(const char* section, const char* key, Access access) {
  using T = std::remove_reference_t<decltype(access(std::declval<Config&>()))>;
  Field f;
  f.section = section;
  f.key = key;
  f.kind = kind_of<T>();
  f.get = [access](const Config& c) -> Value {
    const T& v = access(const_cast<Config&>(c));
    if constexpr (std::is_same_v<T, bool>) return v;
    else if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v);
    else if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
    else return std::string(v);
  };
  f.set = [access](Config& c, const Value& v) {
    T& dst = access(c);
    if constexpr (std::is_same_v<T, bool>) dst = std::get<bool>(v);
    else if constexpr (std::is_integral_v<T>) dst = static_cast<T>(std::get<int64_t>(v));
    else if constexpr (std::is_floating_point_v<T>) dst = static_cast<T>(std::get<double>(v));
    else dst = std::get<std::string>(v);
  };
  return f;
}

#define PG_FIELD(section, path, key) field(section, key, [](Config& c) -> auto& { return c.path; })

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = [] {
    std::vector<Field> f;
    // [model] -> model::ModelConfig
    f.push_back(PG_FIELD("model", model.vocab_size, "vocab_size"));
    f.push_back(PG_FIELD("model", model.num_layers, "num_layers"));
    f.push_back(PG_FIELD("model", model.model_dim, "model_dim"));
    f.push_back(PG_FIELD("model", model.num_heads, "num_heads"));
    f.push_back(PG_FIELD("model", model.num_kv_heads, "num_kv_heads"));
    f.push_back(PG_FIELD("model", model.mlp_mult, "mlp_mult"));
    f.push_back(PG_FIELD("model", model.activation, "activation"));
    f.push_back(PG_FIELD("model", model.leaky_slope, "leaky_slope"));
    f.push_back(PG_FIELD("model", model.rope_base, "rope_base"));
    f.push_back(PG_FIELD("model", model.rope_dims, "rope_dims"));
    f.push_back(PG_FIELD("model", model.qk_gain_init, "qk_gain_init"));
    f.push_back(PG_FIELD("model", model.logit_softcap, "logit_softcap"));
    f.push_back(PG_FIELD("model", model.tie_embeddings, "tie_embeddings"));
    f.push_back(PG_FIELD("model", model.tied_embed_init_std, "tied_embed_init_std"));
    f.push_back(PG_FIELD("model", model.norm_eps, "norm_eps"));
    f.push_back(PG_FIELD("model", model.ln_scale, "ln_scale"));
    f.push_back(PG_FIELD("model", model.fuse_residual_norm, "fuse_residual_norm"));
    f.push_back(PG_FIELD("model", model.mlp_keep_act, "mlp_keep_act"));
    f.push_back(PG_FIELD("model", model.skip_gates, "skip_gates"));
    f.push_back(PG_FIELD("model", model.xsa_layers, "xsa_layers"));
    f.push_back(PG_FIELD("model", model.parallel_residual, "parallel_residual"));
    f.push_back(PG_FIELD("model", model.parallel_start, "parallel_start"));
    f.push_back(PG_FIELD("model", model.loop_start, "loop_start"));
    f.push_back(PG_FIELD("model", model.loop_end, "loop_end"));
    f.push_back(PG_FIELD("model", model.loop_passes, "loop_passes"));
    f.push_back(PG_FIELD("model", model.loop_enable_frac, "loop_enable_frac"));
    f.push_back(PG_FIELD("model", model.loop_pass_fracs, "loop_pass_fracs"));
    f.push_back(PG_FIELD("model", model.smear_gate, "smear_gate"));
    f.push_back(PG_FIELD("model", model.doc_isolated, "doc_isolated"));
    f.push_back(PG_FIELD("model", model.bos_id, "bos_id"));
    f.push_back(PG_FIELD("model", model.smear_window, "smear_window"));
    f.push_back(PG_FIELD("model", model.attn_gate, "attn_gate"));
    f.push_back(PG_FIELD("model", model.attn_gate_window, "attn_gate_window"));
    f.push_back(PG_FIELD("model", model.attn_gate_scale, "attn_gate_scale"));
    f.push_back(PG_FIELD("model", model.value_residual, "value_residual"));
    f.push_back(PG_FIELD("model", model.vrl_init, "vrl_init"));
    f.push_back(PG_FIELD("model", model.ve_dim, "ve_dim"));
    f.push_back(PG_FIELD("model", model.ve_layers, "ve_layers"));
    f.push_back(PG_FIELD("model", model.bigram_buckets, "bigram_buckets"));
    f.push_back(PG_FIELD("model", model.bigram_dim, "bigram_dim"));
    f.push_back(PG_FIELD("model", model.bigram_trigram, "bigram_trigram"));
    f.push_back(PG_FIELD("model", model.gdn_layers, "gdn_layers"));
    f.push_back(PG_FIELD("model", model.gdn_conv_size, "gdn_conv_size"));
    f.push_back(PG_FIELD("model", model.gdn_chunk, "gdn_chunk"));
    f.push_back(PG_FIELD("model", model.gdn_neg_eigval, "gdn_neg_eigval"));
    f.push_back(PG_FIELD("model", model.share_attention, "share_attention"));
    f.push_back(PG_FIELD("model", model.loop_embeddings, "loop_embeddings"));
    f.push_back(PG_FIELD("model", model.attn_window, "attn_window"));
    f.push_back(PG_FIELD("model", model.unet, "unet"));
    f.push_back(PG_FIELD("model", model_compute_dtype, "compute_dtype"));
    // [train]
    f.push_back(PG_FIELD("train", train.seed, "seed"));
    f.push_back(PG_FIELD("train", train.iterations, "iterations"));
    f.push_back(PG_FIELD("train", train.max_wallclock_seconds, "max_wallclock_seconds"));
    f.push_back(PG_FIELD("train", train.train_batch_tokens, "train_batch_tokens"));
    f.push_back(PG_FIELD("train", train.seq_len, "seq_len"));
    f.push_back(PG_FIELD("train", train.grad_accum, "grad_accum"));
    f.push_back(PG_FIELD("train", train.warmup_steps, "warmup_steps"));
    f.push_back(PG_FIELD("train", train.warmdown_iters, "warmdown_iters"));
    f.push_back(PG_FIELD("train", train.warmdown_frac, "warmdown_frac"));
    f.push_back(PG_FIELD("train", train.min_lr, "min_lr"));
    f.push_back(PG_FIELD("train", train.lr_schedule, "lr_schedule"));
    f.push_back(PG_FIELD("train", train.warmdown_shape, "warmdown_shape"));
    f.push_back(PG_FIELD("train", train.lr_warmup_steps, "lr_warmup_steps"));
    f.push_back(PG_FIELD("train", train.loop_warmup_steps, "loop_warmup_steps"));
    f.push_back(PG_FIELD("train", train.val_loss_every, "val_loss_every"));
    f.push_back(PG_FIELD("train", train.val_batch_tokens, "val_batch_tokens"));
    f.push_back(PG_FIELD("train", train.val_max_tokens, "val_max_tokens"));
    f.push_back(PG_FIELD("train", train.train_log_every, "train_log_every"));
    f.push_back(PG_FIELD("train", train.checkpoint_every, "checkpoint_every"));
    f.push_back(PG_FIELD("train", train.device, "device"));
    f.push_back(PG_FIELD("train", train.peak_flops, "peak_flops"));
    f.push_back(PG_FIELD("train", train.int8_roundtrip, "int8_roundtrip"));
    f.push_back(PG_FIELD("train", train.cuda_graph, "cuda_graph"));
    f.push_back(PG_FIELD("train", train.overlap_grad_reduce, "overlap_grad_reduce"));
    // [optim]
    f.push_back(PG_FIELD("optim", optim.matrix_lr, "matrix_lr"));
    f.push_back(PG_FIELD("optim", optim.scalar_lr, "scalar_lr"));
    f.push_back(PG_FIELD("optim", optim.tied_embed_lr, "tied_embed_lr"));
    f.push_back(PG_FIELD("optim", optim.muon_momentum, "muon_momentum"));
    f.push_back(PG_FIELD("optim", optim.muon_momentum_warmup_start, "muon_momentum_warmup_start"));
    f.push_back(PG_FIELD("optim", optim.muon_momentum_warmup_steps, "muon_momentum_warmup_steps"));
    f.push_back(PG_FIELD("optim", optim.muon_backend_steps, "muon_backend_steps"));
    f.push_back(PG_FIELD("optim", optim.nesterov, "nesterov"));
    f.push_back(PG_FIELD("optim", optim.muon_coefficients, "muon_coefficients"));
    f.push_back(PG_FIELD("optim", optim.muon_row_normalize, "muon_row_normalize"));
    f.push_back(PG_FIELD("optim", optim.muon_sharded, "muon_sharded"));
    f.push_back(PG_FIELD("optim", optim.muon_shard_momentum, "muon_shard_momentum"));
    f.push_back(PG_FIELD("optim", optim.beta1, "beta1"));
    f.push_back(PG_FIELD("optim", optim.beta2, "beta2"));
    f.push_back(PG_FIELD("optim", optim.adam_eps, "adam_eps"));
    f.push_back(PG_FIELD("optim", optim.grad_clip_norm, "grad_clip_norm"));
    f.push_back(PG_FIELD("optim", optim.muon_weight_decay, "muon_weight_decay"));
    f.push_back(PG_FIELD("optim", optim.embed_weight_decay, "embed_weight_decay"));
    f.push_back(PG_FIELD("optim", optim.scalar_weight_decay, "scalar_weight_decay"));
    f.push_back(PG_FIELD("optim", optim.muon_wd_taper_start, "muon_wd_taper_start"));
    f.push_back(PG_FIELD("optim", optim.muon_wd_taper_final, "muon_wd_taper_final"));
    f.push_back(PG_FIELD("optim", optim.ema_decay, "ema_decay"));
    f.push_back(PG_FIELD("optim", optim.swa_every, "swa_every"));
    f.push_back(PG_FIELD("optim", optim.swa_lr_threshold, "swa_lr_threshold"));
    f.push_back(PG_FIELD("optim", optim.final_weights, "final_weights"));
    // [qat]
    f.push_back(PG_FIELD("qat", qat.enabled, "enabled"));
    f.push_back(PG_FIELD("qat", qat.lr_threshold, "lr_threshold"));
    f.push_back(PG_FIELD("qat", qat.bits, "bits"));
    f.push_back(PG_FIELD("qat", qat.clipped_ste, "clipped_ste"));
    // [data], [output]
    f.push_back(PG_FIELD("data", data.train, "train"));
    f.push_back(PG_FIELD("data", data.val, "val"));
    f.push_back(PG_FIELD("data", data.tokenizer, "tokenizer"));
    f.push_back(PG_FIELD("data", data.loader, "loader"));
    f.push_back(PG_FIELD("output", output.run_dir, "run_dir"));
    return f;
  }();
  return fields;
}

const Field* find_field(const std::string& section, const std::string& key) {
  for (const auto& f : schema())
    if (f.section == section && f.key == key) return &f;
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& full, const std::string& origin) {
  auto near = closest_keys(full);
  std::string list;
  for (const auto& k : near) list += (list.empty() ? "" : ", ") + k;
  PG_FAIL("{}: unknown config key '{}'{}", origin, full, near.empty() ? "" : "; did you mean: " + list + "?");
}

Value from_toml(const toml::node& node, const Field& f, const std::string& origin) {
  auto bad = [&]() -> Value {
    PG_FAIL("{}: key '{}' expects a {}, got a {}", origin, f.full(), kind_name(f.kind),
            std::string(toml::impl::node_type_friendly_names[static_cast<size_t>(node.type())]));
  };
  switch (f.kind) {
    case Kind::Int:
      if (auto v = node.value_exact<int64_t>()) return *v;
      if (auto d = node.value_exact<double>(); d && std::floor(*d) == *d && std::fabs(*d) < 9e15)
        return static_cast<int64_t>(*d);  // 5e5 written as a float is still an integer
      return bad();
    case Kind::Float:
      if (auto v = node.value<double>()) return *v;  // integers widen
      return bad();
    case Kind::Bool:
      if (auto v = node.value_exact<bool>()) return *v;
      return bad();
    case Kind::String:
      if (auto v = node.value_exact<std::string>()) return *v;
      return bad();
  }
  return bad();
}

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && sp(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && sp(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

Value from_text(const std::string& raw, const Field& f) {
  std::string s = trim(raw);
  auto bad = [&]() -> Value { PG_FAIL("--set {}={}: expects a {}", f.full(), raw, kind_name(f.kind)); };
  switch (f.kind) {
    case Kind::Int: {
      std::string t;
      for (char c : s)
        if (c != '_') t += c;  // TOML-style 524_288
      int64_t v = 0;
      auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (ec == std::errc() && p == t.data() + t.size() && !t.empty()) return v;
      char* end = nullptr;
      double d = std::strtod(t.c_str(), &end);
      if (!t.empty() && end == t.c_str() + t.size() && std::floor(d) == d && std::fabs(d) < 9e15)
        return static_cast<int64_t>(d);
      return bad();
    }
    case Kind::Float: {
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size()) return bad();
      return d;
    }
    case Kind::Bool:
      if (s == "true" || s == "1" || s == "on" || s == "yes") return true;
      if (s == "false" || s == "0" || s == "off" || s == "no") return false;
      return bad();
    case Kind::String:
      if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front())
        s = s.substr(1, s.size() - 2);
      return s;
  }
  return bad();
}

std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out + "\"";
}

std::string format_value(const Value& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto* s = std::get_if<std::string>(&v)) return toml_quote(*s);
  double d = std::get<double>(v);
  std::string s = fmt::format("{}", d);  // shortest round-trip form
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> known_keys() {
  std::vector<std::string> keys;
  for (const auto& f : schema()) keys.push_back(f.full());
  return keys;
}

std::vector<std::string> closest_keys(const std::string& key, size_t n) {
  // Score against both "section.key" and the bare key, so a right key in the wrong section is found.
  std::string bare = key.substr(key.find('.') == std::string::npos ? 0 : key.find('.') + 1);
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& f : schema()) {
    size_t d = std::min(edit_distance(key, f.full()), edit_distance(bare, f.key));
    scored.emplace_back(d, f.full());
  }
  std::stable_sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  size_t limit = std::max<size_t>(3, bare.size() / 2);
  for (auto& [d, k] : scored)
    if (out.size() < n && d <= limit) out.push_back(k);
  return out;
}

Config parse_config_text(const std::string& text, const std::string& origin, Config base) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    PG_FAIL("{}:{}:{}: TOML syntax error: {}", origin, b.line, b.column, std::string(e.description()));
  }
  for (auto&& [sec_key, sec_node] : tbl) {
    std::string section(sec_key.str());
    auto* sec = sec_node.as_table();
    if (!sec) {
      // A top-level key: report it as unknown with suggestions from every section.
      unknown_key(section, origin);
    }
    bool section_known = std::any_of(schema().begin(), schema().end(), [&](auto& f) { return f.section == section; });
    for (auto&& [k, node] : *sec) {
      std::string key(k.str());
      if (!section_known) unknown_key(section + "." + key, origin);
      const Field* f = find_field(section, key);
      if (!f) unknown_key(section + "." + key, origin);
      f->set(base, from_toml(node, *f, origin));
    }
  }
  return base;
}

Config load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PG_CHECK(in.good(), "cannot open config file '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config_text(ss.str(), path);
}

void apply_override(Config& cfg, const std::string& assignment) {
  auto eq = assignment.find('=');
  PG_CHECK(eq != std::string::npos, "--set '{}': expected section.key=value", assignment);
  std::string full = trim(assignment.substr(0, eq));
  auto dot = full.find('.');
  if (dot == std::string::npos) unknown_key(full, "--set");
  const Field* f = find_field(full.substr(0, dot), full.substr(dot + 1));
  if (!f) unknown_key(full, "--set");
  f->set(cfg, from_text(assignment.substr(eq + 1), *f));
}

std::string to_toml(const Config& cfg) {
  std::string out;
  std::string section;
  for (const auto& f : schema()) {
    if (f.section != section) {
      out += (section.empty() ? "" : "\n") + std::string("[") + f.section + "]\n";
      section = f.section;
    }
    out += f.key + " = " + format_value(f.get(cfg)) + "\n";
  }
  return out;
}

void validate(const Config& c, int world_size) {
  const auto& m = c.model;
  PG_CHECK(m.vocab_size > 0 && m.num_layers > 0 && m.model_dim > 0, "config: model sizes must be positive");
  PG_CHECK(m.num_heads > 0 && m.model_dim % m.num_heads == 0, "config: model.model_dim {} is not divisible by num_heads {}",
           m.model_dim, m.num_heads);
  PG_CHECK(m.num_kv_heads > 0 && m.num_heads % m.num_kv_heads == 0,
           "config: model.num_heads {} is not divisible by num_kv_heads {}", m.num_heads, m.num_kv_heads);
  PG_CHECK(m.activation == "relu2" || m.activation == "leaky_relu2",
           "config: model.activation '{}' is not one of relu2, leaky_relu2", m.activation);
  PG_CHECK(c.model_compute_dtype == "auto" || c.model_compute_dtype == "f32" || c.model_compute_dtype == "bf16",
           "config: model.compute_dtype '{}' is not one of auto, f32, bf16", c.model_compute_dtype);
  const auto& t = c.train;
  PG_CHECK(t.seq_len > 0 && t.train_batch_tokens > 0, "config: train.seq_len and train.train_batch_tokens must be > 0");
  PG_CHECK(t.grad_accum >= 0, "config: train.grad_accum must be >= 0 (0 = auto)");
  int64_t accum = t.grad_accum > 0 ? t.grad_accum : std::max<int64_t>(1, 8 / world_size);
  PG_CHECK(t.train_batch_tokens % (world_size * accum * t.seq_len) == 0,
           "config: train.train_batch_tokens {} must be divisible by world_size {} x grad_accum {} x seq_len {}",
           t.train_batch_tokens, world_size, accum, t.seq_len);
  PG_CHECK(t.iterations >= 0 && t.warmup_steps >= 0 && t.warmdown_iters >= 0, "config: step counts must be >= 0");
  PG_CHECK(t.lr_schedule == "wallclock" || t.lr_schedule == "step",
           "config: train.lr_schedule '{}' is not one of wallclock, step", t.lr_schedule);
  PG_CHECK(t.device == "auto" || t.device == "cpu" || t.device == "cuda",
           "config: train.device '{}' is not one of auto, cpu, cuda", t.device);
  PG_CHECK(t.warmdown_frac >= 0 && t.warmdown_frac <= 1, "config: train.warmdown_frac must be in [0, 1]");
  PG_CHECK(t.min_lr >= 0 && t.min_lr <= 1, "config: train.min_lr must be in [0, 1]");
  PG_CHECK(c.qat.bits >= 2 && c.qat.bits <= 8, "config: qat.bits must be in [2, 8], got {}", c.qat.bits);
  PG_CHECK(c.qat.lr_threshold > 0, "config: qat.lr_threshold must be > 0 (> 1 = the whole run), got {}",
           c.qat.lr_threshold);
  PG_CHECK(c.data.loader == "sequential" || c.data.loader == "shuffled" || c.data.loader == "document_packing",
           "config: data.loader '{}' is not one of sequential, shuffled, document_packing", c.data.loader);
  // A packed micro-step is one long row: without document isolation every token would attend to the whole span.
  PG_CHECK(c.data.loader != "document_packing" || m.doc_isolated,
           "config: data.loader = \"document_packing\" needs model.doc_isolated = true (attention within documents)");
  PG_CHECK(t.warmdown_shape == "linear" || t.warmdown_shape == "cosine",
           "config: train.warmdown_shape '{}' is not one of linear, cosine", t.warmdown_shape);
  PG_CHECK(t.lr_warmup_steps >= 0, "config: train.lr_warmup_steps must be >= 0, got {}", t.lr_warmup_steps);
  PG_CHECK(t.loop_warmup_steps >= 0, "config: train.loop_warmup_steps must be >= 0, got {}", t.loop_warmup_steps);
  PG_CHECK(t.train_log_every >= 0 && t.val_loss_every >= 0 && t.checkpoint_every >= 0,
           "config: *_every values must be >= 0");
  PG_CHECK(t.val_batch_tokens >= t.seq_len, "config: train.val_batch_tokens must be >= seq_len");
  const auto& o = c.optim;
  PG_CHECK(o.muon_coefficients == "baseline" || o.muon_coefficients == "polar_express",
           "config: optim.muon_coefficients '{}' is not one of baseline, polar_express", o.muon_coefficients);
  PG_CHECK(o.muon_backend_steps > 0, "config: optim.muon_backend_steps must be > 0");
  PG_CHECK(!o.muon_shard_momentum || o.muon_sharded,
           "config: optim.muon_shard_momentum = true needs optim.muon_sharded = true (the rank that owns a matrix's "
           "momentum also orthogonalises it)");
  PG_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "config: optim.beta1/beta2 must be in [0, 1)");
  PG_CHECK(o.grad_clip_norm >= 0, "config: optim.grad_clip_norm must be >= 0 (0 = off), got {}", o.grad_clip_norm);
  PG_CHECK(o.muon_weight_decay >= 0 && o.embed_weight_decay >= 0 && o.scalar_weight_decay >= 0,
           "config: optim.*_weight_decay must be >= 0");
  PG_CHECK(o.muon_wd_taper_start >= 0 && o.muon_wd_taper_start <= 1,
           "config: optim.muon_wd_taper_start must be in [0, 1], got {}", o.muon_wd_taper_start);
  PG_CHECK(o.muon_wd_taper_final >= 0, "config: optim.muon_wd_taper_final must be >= 0, got {}", o.muon_wd_taper_final);
  PG_CHECK(o.ema_decay >= 0 && o.ema_decay < 1, "config: optim.ema_decay must be in [0, 1) (0 = off), got {}",
           o.ema_decay);
  PG_CHECK(o.swa_every >= 0, "config: optim.swa_every must be >= 0 (0 = off), got {}", o.swa_every);
  PG_CHECK(o.swa_lr_threshold > 0, "config: optim.swa_lr_threshold must be > 0, got {}", o.swa_lr_threshold);
  const std::string& fw = o.final_weights;
  PG_CHECK(fw == "auto" || fw == "live" || fw == "ema" || fw == "swa" || fw == "ema_swa",
           "config: optim.final_weights '{}' is not one of auto, live, ema, swa, ema_swa", fw);
  PG_CHECK((fw != "ema" && fw != "ema_swa") || o.ema_decay > 0,
           "config: optim.final_weights = '{}' needs optim.ema_decay > 0 (EMA is off)", fw);
  PG_CHECK((fw != "swa" && fw != "ema_swa") || o.swa_every > 0,
           "config: optim.final_weights = '{}' needs optim.swa_every > 0 (SWA is off)", fw);
}

}  // namespace pgolf::train
