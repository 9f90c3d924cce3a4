// pgolf pack RUN_DIR: trained weights -> GPTQ/int-N artifact under the 16 MB counted-byte limit;
// pgolf info FILE: what an artifact holds.
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "artifact/code_bytes.h"
#include "artifact/compress.h"
#include "artifact/info.h"
#include "artifact/model_io.h"
#include "artifact/pack_model.h"
#include "artifact/pack_preset.h"
#include "artifact/reader.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/memory.h"
#include "data/file_util.h"
#include "quant/calibrate.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pgolf::cli {

namespace {

struct PackArgs {
  std::string run_dir, out, source_dir, compressor = "auto", device = "auto", calib_data;
  std::string preset = std::string(artifact::kDefaultPackPreset), clip_search = "preset";
  int64_t calib_batches = 16, calib_seqs = 8, calib_seq_len = 0;
  int bits = 0;        // 0 = the preset's
  int embed_bits = 0;  // 0 = the preset's
  double clip_k_scale = 1.0;  // multiplies every SDClip k of the preset (size falls by log2(scale) bits per weight)
  uint64_t budget = artifact::kCountedByteLimit;
  bool allow_over = false, quick = false, lqer = false;
};

Device pick(const std::string& want) {
  if (want == "cpu") return Device::CPU;
  PG_CHECK(want == "auto" || want == "cuda", "--device must be auto, cpu or cuda, got '{}'", want);
  PG_CHECK(want == "auto" || cuda_available(), "--device cuda: no CUDA device is available to this build");
  return cuda_available() ? Device::CUDA : Device::CPU;
}

// The evaluator's source tree: --source-dir, else the tree this binary was compiled from (when it
// is still there), else PGOLF_SOURCE_DIR from the environment.
std::string find_source_dir(const std::string& given) {
  namespace fs = std::filesystem;
  if (!given.empty()) return given;
#ifdef PGOLF_SOURCE_DIR
  if (fs::exists(std::string(PGOLF_SOURCE_DIR) + "/CMakeLists.txt")) return PGOLF_SOURCE_DIR;
#endif
  const fs::path self(__FILE__);  // <root>/src/cli/cmd_pack.cpp
  if (self.is_absolute()) {
    const fs::path root = self.parent_path().parent_path().parent_path();
    if (fs::exists(root / "CMakeLists.txt") && fs::exists(root / "src")) return root.string();
  }
  if (const char* env = std::getenv("PGOLF_SOURCE_DIR"); env && *env) return env;
  PG_FAIL("pack: cannot find the pgolf source tree to count code bytes; pass --source-dir DIR");
}

artifact::SolverOptions solver_for(const PackArgs& a, const artifact::PackPreset& preset) {
  artifact::SolverOptions s = artifact::preset_solver(preset);
  if (a.quick) {
    // The format fixes each compressor's level, so "quick" means one cheap trial per section; a
    // preset that pins one layout order (pr1672: size-descending) keeps it, which costs no trial.
    s.compressors = {artifact::Compressor::Zlib9};
    s.shuffle_strides = {1};
    if (preset.orders.size() != 1) s.orders = {artifact::LayoutOrder::Given};
    s.transposed_codes = {false};
  }
  if (a.compressor != "auto") {
    artifact::Compressor c;
    PG_CHECK(artifact::parse_compressor(a.compressor, &c),
             "--compressor '{}' is not one of auto, none, zlib-9, brotli-11, lzma-9e, zstd-22, cm", a.compressor);
    s.compressors = {c};
  }
  return s;
}

void run_pack(const PackArgs& a) {
  namespace fs = std::filesystem;
  PG_CHECK(a.bits == 0 || (a.bits >= 2 && a.bits <= 8), "--bits {} must be in 2..8", a.bits);
  const artifact::PackPreset preset = artifact::pack_preset(a.preset);
  const std::string out = a.out.empty() ? a.run_dir + "/final_model.pgolf" : a.out;
  const train::Config cfg = train::load_config_file(train::config_path(a.run_dir));
  const Device dev = pick(a.device);
  auto gpt = artifact::load_model_from_run(a.run_dir, dev);
  std::printf("pgolf pack: %s (%lld parameters) on %s\n", a.run_dir.c_str(),
              static_cast<long long>(gpt->params().count_elements()), std::string(device_name(dev)).c_str());

  if (!preset.note.empty()) std::printf("preset %s: %s\n", preset.name.c_str(), preset.note.c_str());
  std::map<std::string, quant::LinearHessian> hessians;
  quant::CalibrationStats cs;
  if (a.calib_batches > 0) {
    quant::CalibrationOptions co;
    co.train_pattern = a.calib_data.empty() ? cfg.data.train : a.calib_data;
    co.batches = a.calib_batches;
    co.batch_seqs = a.calib_seqs;
    co.seq_len = a.calib_seq_len > 0 ? a.calib_seq_len : cfg.train.seq_len;
    hessians = quant::collect_hessians(*gpt, co, &cs);
    std::printf("calibration: %zu Hessians from %lld batches, %lld tokens (%s) in %.1f s\n", hessians.size(),
                static_cast<long long>(cs.batches), static_cast<long long>(cs.tokens), co.train_pattern.c_str(),
                cs.seconds);
  } else {
    std::printf("calibration: off (--calib-batches 0): GPTQ roles fall back to round-to-nearest\n");
  }

  const std::string src = find_source_dir(a.source_dir);
  const artifact::CodeBytes code = artifact::compute_code_bytes(src);
  artifact::PackModelOptions po;
  po.policy = preset.policy;
  if (a.bits != 0) {
    po.policy.attn.bits = a.bits;
    po.policy.mlp.bits = a.bits;
  }
  PG_CHECK(a.embed_bits == 0 || (a.embed_bits >= 2 && a.embed_bits <= 8), "--embed-bits must be 2..8, got {}",
           a.embed_bits);
  if (a.embed_bits != 0) po.policy.embed.bits = a.embed_bits;
  PG_CHECK(a.clip_k_scale > 0 && a.clip_k_scale <= 10, "--clip-k-scale must be in (0, 10], got {}", a.clip_k_scale);
  for (quant::RolePolicy* r : {&po.policy.embed, &po.policy.attn, &po.policy.mlp})
    if (r->clip.kind == quant::ClipKind::SdClip) r->clip.value *= a.clip_k_scale;
  if (a.clip_search != "preset")
    PG_CHECK(quant::parse_clip_search_mode(a.clip_search, &po.policy.clip_search.mode),
             "--clip-search '{}' is not one of preset, off, matrix, row", a.clip_search);
  po.lqer = a.lqer || preset.lqer;
  po.solver = solver_for(a, preset);
  po.counted_limit = a.budget;
  po.code_bytes = code.code_bytes;
  po.allow_over = a.allow_over;
  artifact::PackModelResult r = artifact::pack_model(*gpt, hessians, po);

  fs::create_directories(fs::absolute(out).parent_path());
  artifact::write_file_atomic(out, r.budget.bytes);
  const artifact::CountedBytes counted{r.artifact_bytes(), code.code_bytes};

  nlohmann::ordered_json j;
  j["artifact"] = out;
  j["artifact_bytes"] = counted.artifact_bytes;
  j["code_bytes"] = counted.code_bytes;
  j["counted_bytes"] = counted.total();
  j["limit"] = a.budget;
  j["within_limit"] = counted.within(a.budget);
  j["source_dir"] = src;
  j["code_files"] = code.files;
  j["pruned_codes"] = r.budget.prune.pruned;
  j["prune_candidates"] = r.budget.prune.candidates;
  j["lqer_tensors"] = r.lqer_tensors;
  j["calibration"] = {{"batches", cs.batches}, {"tokens", cs.tokens}, {"seconds", cs.seconds}};
  j["preset"] = preset.name;
  j["clip_search"] = std::string(quant::clip_search_mode_name(po.policy.clip_search.mode));
  j["bits"] = po.policy.attn.bits;
  j["embed_bits"] = po.policy.embed.bits;
  j["clip_k_scale"] = a.clip_k_scale;
  j["quick"] = a.quick;
  auto& secs = j["sections"] = nlohmann::ordered_json::array();
  for (const auto& s : r.budget.report.sections)
    secs.push_back({{"name", s.name}, {"compressor", std::string(artifact::compressor_name(s.compressor))},
                    {"shuffle", s.shuffle_stride}, {"raw_bytes", s.raw_bytes}, {"stored_bytes", s.stored_bytes}});
  auto& ts = j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : r.tensors)
    ts.push_back({{"name", t.name}, {"role", t.role}, {"storage", t.method}, {"bits", t.bits}, {"numel", t.numel},
                  {"hessian", t.hessian}, {"lqer", t.lqer}, {"rel_error", t.rel_error},
                  {"rel_proxy_error", t.hessian ? nlohmann::ordered_json(t.rel_proxy) : nlohmann::ordered_json()}});
  data::write_file_atomic(a.run_dir + "/pack.json", j.dump(2) + "\n");

  std::printf("artifact bytes: %llu (%s)\ncode bytes:     %llu (%llu files under %s)\ncounted bytes:  %llu of %llu%s\n",
              static_cast<unsigned long long>(counted.artifact_bytes), out.c_str(),
              static_cast<unsigned long long>(counted.code_bytes), static_cast<unsigned long long>(code.files),
              src.c_str(), static_cast<unsigned long long>(counted.total()),
              static_cast<unsigned long long>(a.budget), counted.within(a.budget) ? "" : "  ** OVER THE LIMIT **");
  if (r.budget.prune.pruned > 0)
    std::printf("pruned %zu of %zu +-1 codes to fit\n", r.budget.prune.pruned, r.budget.prune.candidates);
  std::printf("per-tensor errors: %s/pack.json\n", a.run_dir.c_str());
}

void run_info(const std::string& path) {
  artifact::ArtifactFileInfo info;
  artifact::read_artifact_file(path, &info);
  std::printf("%s: ", path.c_str());
  std::fputs(artifact::describe_artifact(info).c_str(), stdout);
}

}  // namespace

void add_pack_commands(CLI::App& app) {
  auto a = std::make_shared<PackArgs>();
  auto* pack = app.add_subcommand("pack", "Quantize a trained run into a counted-byte-limited artifact (docs/ARTIFACT.md)");
  pack->add_option("run_dir", a->run_dir, "Run directory written by pgolf train")->required();
  pack->add_option("--out,-o", a->out, "Artifact path (default RUN_DIR/final_model.pgolf)");
  pack->add_option("--calib-batches", a->calib_batches, "GPTQ calibration batches from the train shards (0 = no GPTQ)");
  pack->add_option("--calib-seqs", a->calib_seqs, "Sequences per calibration batch");
  pack->add_option("--calib-seq-len", a->calib_seq_len, "Calibration sequence length (default: the run's seq_len)");
  pack->add_option("--calib-data", a->calib_data, "Token shards for calibration (default: the run's data.train)");
  pack->add_option("--preset", a->preset,
                   "Quantization preset: top-2026-04-27 (default), rec-2026-04-09, pr1658, pr1555, pr1072, pr915, "
                   "pr1672 (GDN hybrid seed), baseline (docs/ARTIFACT.md)");
  pack->add_option("--clip-search", a->clip_search, "preset | off | matrix | row: clip search of the int-N matrices");
  pack->add_option("--bits", a->bits, "Bits of the attention and MLP matrices (default: the preset's)");
  pack->add_option("--embed-bits", a->embed_bits, "Bits of the tied embedding (default: the preset's)");
  pack->add_option("--clip-k-scale", a->clip_k_scale,
                   "Multiply every SDClip k of the preset (>1: coarser codes, fewer bytes; §7.7)");
  pack->add_option("--budget", a->budget, "Counted-byte limit (artifact + code bytes)");
  pack->add_flag("--allow-over", a->allow_over, "Write the artifact even when it exceeds the limit");
  pack->add_option("--compressor", a->compressor,
                   "auto (the preset's list) | none | zlib-9 | brotli-11 | lzma-9e | zstd-22 | cm (context-mixing coder of int code matrices)");
  pack->add_flag("--quick", a->quick, "One cheap compressor trial per section (tests, smoke runs)");
  pack->add_flag("--lqer", a->lqer, "Low-rank error correction on the worst tensors (on in the top preset)");
  pack->add_option("--source-dir", a->source_dir, "Source tree whose code bytes are counted");
  pack->add_option("--device", a->device, "auto | cpu | cuda");
  pack->callback([a] { run_pack(*a); });

  auto file = std::make_shared<std::string>();
  auto* info = app.add_subcommand("info", "Print an artifact's tensors, bits, sections and compression ratios");
  info->add_option("file", *file, "Artifact file")->required();
  info->callback([file] { run_info(*file); });
}

}  // namespace pgolf::cli
