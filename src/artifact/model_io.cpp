#include "artifact/model_io.h"

#include <filesystem>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "artifact/reader.h"
#include "core/error.h"
#include "model/safetensors.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace pgolf::artifact {

namespace {

using json = nlohmann::ordered_json;

constexpr const char* kArch = "pgolf-gpt";
constexpr int kConfigVersion = 1;

// One ModelConfig field <-> one JSON key. Adding a field to ModelConfig means adding a line here;
// a key this build does not list is rejected on read (the model would silently run differently).
struct Field {
  const char* key;
  std::function<json(const model::ModelConfig&)> get;
  std::function<void(model::ModelConfig&, const json&)> set;
};

template <class T>
Field field(const char* key, T model::ModelConfig::*member) {
  return Field{key, [member](const model::ModelConfig& c) { return json(c.*member); },
               [member](model::ModelConfig& c, const json& v) { c.*member = v.get<T>(); }};
}

const std::vector<Field>& fields() {
  using M = model::ModelConfig;
  static const std::vector<Field> f = {
      field("vocab_size", &M::vocab_size),       field("num_layers", &M::num_layers),
      field("model_dim", &M::model_dim),         field("num_heads", &M::num_heads),
      field("num_kv_heads", &M::num_kv_heads),   field("mlp_mult", &M::mlp_mult),
      field("activation", &M::activation),       field("leaky_slope", &M::leaky_slope),
      field("rope_base", &M::rope_base),         field("rope_dims", &M::rope_dims),
      field("qk_gain_init", &M::qk_gain_init),   field("logit_softcap", &M::logit_softcap),
      field("tie_embeddings", &M::tie_embeddings), field("tied_embed_init_std", &M::tied_embed_init_std),
      field("ln_scale", &M::ln_scale),           field("skip_gates", &M::skip_gates),
      field("xsa_layers", &M::xsa_layers),       field("parallel_residual", &M::parallel_residual),
      field("parallel_start", &M::parallel_start), field("loop_start", &M::loop_start),
      field("loop_end", &M::loop_end),           field("loop_passes", &M::loop_passes),
      field("loop_enable_frac", &M::loop_enable_frac), field("loop_pass_fracs", &M::loop_pass_fracs),
      field("smear_gate", &M::smear_gate),
      field("doc_isolated", &M::doc_isolated),   field("bos_id", &M::bos_id),
      field("norm_eps", &M::norm_eps),           field("smear_window", &M::smear_window),
      field("attn_gate", &M::attn_gate),         field("attn_gate_window", &M::attn_gate_window),
      field("attn_gate_scale", &M::attn_gate_scale), field("value_residual", &M::value_residual),
      field("vrl_init", &M::vrl_init),           field("ve_dim", &M::ve_dim),
      field("ve_layers", &M::ve_layers),         field("bigram_buckets", &M::bigram_buckets),
      field("bigram_dim", &M::bigram_dim),       field("bigram_trigram", &M::bigram_trigram),
      field("gdn_layers", &M::gdn_layers),       field("gdn_conv_size", &M::gdn_conv_size),
      field("gdn_chunk", &M::gdn_chunk),         field("gdn_neg_eigval", &M::gdn_neg_eigval),
      field("share_attention", &M::share_attention), field("loop_embeddings", &M::loop_embeddings), field("attn_window", &M::attn_window),
      field("unet", &M::unet),
  };
  return f;
}

}  // namespace

std::string model_config_to_json(const model::ModelConfig& cfg) {
  json m = json::object();
  for (const Field& f : fields()) m[f.key] = f.get(cfg);
  json j = json::object();
  j["arch"] = kArch;
  j["config_version"] = kConfigVersion;
  j["model"] = m;
  return j.dump();
}

model::ModelConfig model_config_from_json(const std::string& text, const std::string& source) {
  PG_CHECK(!text.empty(), "{}: the artifact holds no model config (empty config JSON)", source);
  json j;
  try {
    j = json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    PG_FAIL("{}: model config is not valid JSON: {}", source, e.what());
  }
  PG_CHECK(j.is_object(), "{}: model config must be a JSON object", source);
  for (const auto& [k, v] : j.items())
    PG_CHECK(k == "arch" || k == "config_version" || k == "model",
             "{}: model config has unknown top-level key '{}' (known: arch, config_version, model)", source, k);
  PG_CHECK(j.contains("arch") && j["arch"].is_string() && j["arch"].get<std::string>() == kArch,
           "{}: model config arch is {}, this build runs '{}'", source, j.contains("arch") ? j["arch"].dump() : "missing",
           kArch);
  PG_CHECK(j.contains("config_version") && j["config_version"].is_number_integer() &&
               j["config_version"].get<int>() == kConfigVersion,
           "{}: model config_version is {}, this build reads {}", source,
           j.contains("config_version") ? j["config_version"].dump() : "missing", kConfigVersion);
  PG_CHECK(j.contains("model") && j["model"].is_object(), "{}: model config has no 'model' object", source);
  model::ModelConfig cfg;
  for (const auto& [k, v] : j["model"].items()) {
    const Field* f = nullptr;
    for (const Field& c : fields())
      if (k == c.key) f = &c;
    PG_CHECK(f != nullptr, "{}: model config key '{}' is not known to this build (a newer pgolf wrote it?)", source, k);
    try {
      f->set(cfg, v);
    } catch (const nlohmann::json::exception& e) {
      PG_FAIL("{}: model config key '{}' has the wrong type ({}): {}", source, k, v.dump(), e.what());
    }
  }
  check_model_config(cfg, source);
  return cfg;
}

void check_model_config(const model::ModelConfig& c, const std::string& source) {
  PG_CHECK(c.vocab_size > 0 && c.num_layers > 0 && c.model_dim > 0,
           "{}: model vocab_size {}, num_layers {}, model_dim {} must all be > 0", source, c.vocab_size, c.num_layers,
           c.model_dim);
  PG_CHECK(c.num_heads > 0 && c.model_dim % c.num_heads == 0, "{}: model_dim {} is not a multiple of num_heads {}",
           source, c.model_dim, c.num_heads);
  PG_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
           "{}: num_heads {} is not a multiple of num_kv_heads {}", source, c.num_heads, c.num_kv_heads);
  PG_CHECK(c.activation == "relu2" || c.activation == "leaky_relu2",
           "{}: activation '{}' is not one this build runs (relu2, leaky_relu2)", source, c.activation);
  PG_CHECK(c.tie_embeddings, "{}: untied embeddings are not supported by this build", source);
  PG_CHECK(c.mlp_hidden() > 0, "{}: mlp_mult {} gives no hidden units", source, c.mlp_mult);
  try {
    model::check_model_config(c);  // the model's own checks, incl. switches not implemented yet
  } catch (const Error& e) {
    PG_FAIL("{}: {}", source, e.what());
  }
}

DType default_act_dtype(Device dev) { return dev == Device::CUDA ? DType::BF16 : DType::F32; }

std::unique_ptr<model::GPT> model_from_artifact(const Artifact& a, Device dev, const std::string& source) {
  model::ModelConfig cfg = model_config_from_json(a.config_json, source);
  cfg.act_dtype = default_act_dtype(dev);
  auto gpt = std::make_unique<model::GPT>(cfg, dev);
  auto& table = gpt->params();
  std::set<std::string> used;
  for (model::Param& p : table.all()) {
    const StoredTensor* t = a.find(p.spec.name);
    PG_CHECK(t != nullptr, "{}: parameter '{}' {} is missing from the artifact", source, p.spec.name,
             p.spec.shape.str());
    Shape sh = Shape::from(t->shape.begin(), t->shape.end());
    PG_CHECK(sh == p.spec.shape, "{}: tensor '{}' has shape {} in the artifact, the model expects {}", source,
             p.spec.name, sh.str(), p.spec.shape.str());
    PG_CHECK(t->kind != StorageKind::Bytes, "{}: tensor '{}' is stored as bytes, not as numbers", source, p.spec.name);
    std::vector<float> values = dequantize(*t);
    p.value.copy_from(Tensor::from_vector(values, p.spec.shape, Device::CPU));
    used.insert(p.spec.name);
  }
  for (const StoredTensor& t : a.tensors) {
    if (t.kind == StorageKind::Bytes) continue;  // opaque metadata (e.g. a tokenizer table), not a parameter
    PG_CHECK(used.count(t.name) != 0, "{}: tensor '{}' is not a parameter of this model (config and weights disagree)",
             source, t.name);
  }
  table.sync_compute();
  return gpt;
}

std::unique_ptr<model::GPT> load_model_from_artifact(const std::string& path, Device dev) {
  Artifact a = read_artifact_file(path);
  return model_from_artifact(a, dev, path);
}

std::string final_weights_path(const std::string& run_dir) { return run_dir + "/final_model.safetensors"; }

std::unique_ptr<model::GPT> load_model_from_run(const std::string& run_dir, Device dev) {
  namespace fs = std::filesystem;
  PG_CHECK(fs::is_directory(run_dir), "{}: not a run directory", run_dir);
  const std::string cfg_path = train::config_path(run_dir);
  PG_CHECK(fs::exists(cfg_path), "{}: no {} (was it written by pgolf train?)", run_dir, cfg_path);
  train::Config cfg = train::load_config_file(cfg_path);
  model::ModelConfig mc = cfg.model;
  mc.act_dtype = cfg.model_compute_dtype == "bf16" ? DType::BF16
                 : cfg.model_compute_dtype == "f32" ? DType::F32
                                                    : default_act_dtype(dev);
  check_model_config(mc, cfg_path);

  const std::string weights = final_weights_path(run_dir);
  if (fs::exists(weights)) {
    auto gpt = std::make_unique<model::GPT>(mc, dev);
    model::import_params(gpt->params(), weights);
    return gpt;
  }
  const std::string ckpt = train::checkpoint_path(run_dir);
  PG_CHECK(fs::exists(ckpt), "{}: neither {} nor {} exists (train the run first)", run_dir, weights, ckpt);
  // The checkpoint also holds the optimizer state; load_checkpoint wants every tensor, so a CPU
  // model and optimizer receive it and only the parameters move on.
  model::ModelConfig host_cfg = mc;
  host_cfg.act_dtype = DType::F32;
  model::GPT host(host_cfg, Device::CPU);
  train::Optimizer opt(host.params(), cfg.optim, Device::CPU, DType::F32);
  train::NamedTensors tensors;
  for (auto& p : host.params().all()) tensors.emplace_back("param." + p.spec.name, p.value);
  for (auto& s : opt.state_tensors()) tensors.push_back(s);
  train::load_checkpoint(ckpt, tensors);
  auto gpt = std::make_unique<model::GPT>(mc, dev);
  auto& src = host.params().all();
  auto& dst = gpt->params().all();
  for (size_t i = 0; i < dst.size(); ++i) dst[i].value.copy_from(src[i].value);
  gpt->params().sync_compute();
  return gpt;
}

}  // namespace pgolf::artifact
