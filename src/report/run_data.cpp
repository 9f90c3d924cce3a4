#include "report/run_data.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.h"

namespace pgolf::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The first of `keys` that holds a number; NaN when none does (null included: the trainer writes
// null for a bpb it could not compute).
double number(const json& j, std::initializer_list<const char*> keys) {
  if (!j.is_object()) return kNaN;
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && it->is_number()) return it->get<double>();
  }
  return kNaN;
}

std::string text(const json& j, std::initializer_list<const char*> keys) {
  if (!j.is_object()) return {};
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return {};
}

bool read_text(const fs::path& p, std::string* out) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

std::string scalar_text(const json& v) {
  if (v.is_number_integer()) return fmt::format("{}", v.get<int64_t>());
  if (v.is_number()) return fmt::format("{:.6g}", v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_null()) return "null";
  return v.dump();
}

std::string last_lines(const std::string& s, size_t max_lines, size_t max_bytes) {
  size_t pos = s.size();
  if (pos > 0 && s[pos - 1] == '\n') --pos;
  size_t lines = 0;
  while (pos > 0 && lines < max_lines && s.size() - pos < max_bytes) {
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++lines;
  }
  return s.substr(pos == 0 ? 0 : pos + 1);
}

void load_config(RunData& run, const fs::path& p) {
  if (!read_text(p, &run.config_toml)) {
    run.warnings.push_back("no config.toml");
    return;
  }
  try {
    const toml::table tbl = toml::parse(run.config_toml, p.string());
    run.momentum = tbl["optim"]["muon_momentum"].value<double>().value_or(kNaN);
    run.momentum_start = tbl["optim"]["muon_momentum_warmup_start"].value<double>().value_or(kNaN);
    run.momentum_warmup_steps = tbl["optim"]["muon_momentum_warmup_steps"].value<double>().value_or(kNaN);
  } catch (const std::exception& e) {
    run.warnings.push_back(fmt::format("config.toml does not parse: {}", e.what()));
  }
}

}  // namespace

std::pair<std::string, int> tensor_group(const std::string& name) {
  std::string group;
  int layer = -1;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string::npos) end = name.size();
    const std::string part = name.substr(start, end - start);
    const bool digits = !part.empty() && part.size() < 9 &&
                        std::all_of(part.begin(), part.end(), [](unsigned char c) { return std::isdigit(c); });
    if (!group.empty()) group += '.';
    if (digits && layer < 0) {
      layer = std::stoi(part);
      group += '*';
    } else {
      group += part;
    }
    start = end + 1;
  }
  return {group, layer};
}

bool apply_metrics_line(RunData& run, const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return true;
  const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  const std::string type = text(j, {"type"});
  if (type == "train") {
    TrainPoint p;
    p.step = number(j, {"step"});
    p.wallclock_s = number(j, {"wallclock_s"});
    p.train_loss = number(j, {"train_loss"});
    p.lr_mult = number(j, {"lr_mult"});
    p.step_ms = number(j, {"step_ms"});
    p.tokens_per_s = number(j, {"tokens_per_s"});
    p.gpu_mem_gib = number(j, {"gpu_mem_gib"});
    // A resumed run repeats the steps after its checkpoint: the later attempt is the one that counts.
    if (!run.train.empty() && p.step <= run.train.back().step) {
      std::erase_if(run.train, [&](const TrainPoint& t) { return t.step >= p.step; });
      std::erase_if(run.val, [&](const ValPoint& v) { return v.step >= p.step; });
    }
    run.train.push_back(p);
  } else if (type == "val" || type == "final") {
    ValPoint v;
    v.step = number(j, {"step"});
    v.wallclock_s = number(j, {"wallclock_s"});
    v.val_loss = number(j, {"val_loss"});
    v.val_bpb = number(j, {"val_bpb"});
    v.eval_ms = number(j, {"eval_ms"});
    v.final = type == "final";
    if (!run.val.empty() && v.step <= run.val.back().step)
      std::erase_if(run.val, [&](const ValPoint& o) { return o.step >= v.step; });
    run.val.push_back(v);
  } else if (type == "checkpoint") {
    run.checkpoints.push_back(j);
  } else if (type == "error") {
    run.errors.push_back(j);
  } else if (type == "summary") {
    run.summary = j;
  }
  return true;
}

PackInfo parse_pack_json(const json& j) {
  PackInfo p;
  p.present = true;
  p.raw = j;
  p.total_bytes = number(j, {"total_bytes", "artifact_bytes", "file_bytes"});
  p.code_bytes = number(j, {"code_bytes"});
  p.limit_bytes = number(j, {"limit_bytes", "budget_bytes", "limit"});
  p.counted_bytes = number(j, {"counted_bytes"});
  if (!std::isfinite(p.counted_bytes) && std::isfinite(p.total_bytes) && std::isfinite(p.code_bytes))
    p.counted_bytes = p.total_bytes + p.code_bytes;
  auto add_tensor = [&](const json& t, const std::string& key) {
    if (!t.is_object()) return;
    PackTensor pt;
    pt.name = text(t, {"name"});
    if (pt.name.empty()) pt.name = key;
    auto [group, layer] = tensor_group(pt.name);
    pt.group = text(t, {"group"});
    if (pt.group.empty()) pt.group = group;
    const double l = number(t, {"layer"});
    pt.layer = std::isfinite(l) ? static_cast<int>(l) : layer;
    pt.compressor = text(t, {"compressor", "codec"});
    pt.bytes = number(t, {"bytes", "stored_bytes", "packed_bytes"});
    pt.raw_bytes = number(t, {"raw_bytes"});
    pt.bits = number(t, {"bits", "bits_per_weight"});
    pt.rel_error = number(t, {"rel_error", "quant_rel_error", "rel_err", "relative_error"});
    pt.proxy_error = number(t, {"proxy_error", "rel_proxy_error", "wx_error", "act_error", "output_rel_error"});
    p.tensors.push_back(std::move(pt));
  };
  if (auto it = j.find("tensors"); it != j.end()) {
    if (it->is_array())
      for (const auto& t : *it) add_tensor(t, "");
    else if (it->is_object())
      for (const auto& [k, t] : it->items()) add_tensor(t, k);
  }
  // Tensors without stored bytes but with numel and bits: share the "codes" section out by raw bits.
  bool any_bytes = false;
  double raw_bits = 0;
  std::vector<double> bits_of(p.tensors.size(), 0.0);
  if (auto it = j.find("tensors"); it != j.end() && it->is_array()) {
    for (size_t i = 0; i < p.tensors.size() && i < it->size(); ++i) {
      any_bytes |= std::isfinite(p.tensors[i].bytes);
      const double n = number((*it)[i], {"numel"}), b = p.tensors[i].bits;
      if (std::isfinite(n) && std::isfinite(b)) raw_bits += bits_of[i] = n * b;
    }
  }
  double codes_stored = kNaN;
  if (auto it = j.find("sections"); it != j.end() && it->is_array())
    for (const auto& s : *it)
      if (text(s, {"name"}) == "codes") codes_stored = number(s, {"stored_bytes", "bytes", "compressed_bytes"});
  if (!any_bytes && raw_bits > 0 && std::isfinite(codes_stored)) {
    for (size_t i = 0; i < p.tensors.size(); ++i)
      if (bits_of[i] > 0) p.tensors[i].bytes = codes_stored * bits_of[i] / raw_bits;
    p.tensor_bytes_estimated = true;
  }
  auto add_bytes = [&](const std::string& name, double bytes) {
    if (name.empty() || !std::isfinite(bytes)) return;
    for (auto& [n, b] : p.bytes_by_compressor)
      if (n == name) {
        b += bytes;
        return;
      }
    p.bytes_by_compressor.emplace_back(name, bytes);
  };
  if (auto it = j.find("sections"); it != j.end() && it->is_array()) {
    for (const auto& s : *it) add_bytes(text(s, {"compressor", "codec", "name"}), number(s, {"stored_bytes", "bytes", "compressed_bytes"}));
  } else {
    for (const auto& t : p.tensors) add_bytes(t.compressor, t.bytes);
  }
  return p;
}

EvalInfo parse_eval_json(const json& j, const std::string& file) {
  EvalInfo e;
  e.file = file;
  if (!j.is_object()) return e;
  static const char* kPhaseKeys[] = {"phase_seconds", "phases", "phase_times", "timings"};
  auto is_phase_key = [](const std::string& k) {
    return std::find(std::begin(kPhaseKeys), std::end(kPhaseKeys), k) != std::end(kPhaseKeys);
  };
  for (const auto& [k, v] : j.items()) {
    if (is_phase_key(k)) continue;
    if (v.is_object()) {
      for (const auto& [k2, v2] : v.items())
        if (!v2.is_structured()) e.scalars.emplace_back(k + "." + k2, scalar_text(v2));
    } else if (!v.is_array()) {
      e.scalars.emplace_back(k, scalar_text(v));
    }
  }
  auto phase_seconds = [](const json& v) {
    if (v.is_number()) return v.get<double>();
    const double s = number(v, {"seconds", "s", "time_s", "wall_s"});
    return std::isfinite(s) ? s : number(v, {"ms", "time_ms", "wall_ms"}) / 1000.0;
  };
  for (const char* key : kPhaseKeys) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    if (it->is_array()) {
      for (const auto& ph : *it) e.phases.push_back({text(ph, {"name", "phase"}), phase_seconds(ph)});
    } else if (it->is_object()) {
      for (const auto& [k, v] : it->items()) {
        std::string name = k;
        double s = phase_seconds(v);
        if (v.is_number() && name.size() > 3 && name.ends_with("_ms")) {
          name.resize(name.size() - 3);
          s /= 1000.0;
        } else if (v.is_number() && name.size() > 2 && name.ends_with("_s")) {
          name.resize(name.size() - 2);
        }
        e.phases.push_back({name, s});
      }
    }
    break;
  }
  return e;
}

RunData load_run(const std::string& dir) {
  PG_CHECK(fs::is_directory(dir), "report: '{}' is not a run directory", dir);
  RunData run;
  run.dir = dir;
  fs::path p = fs::path(dir);
  run.name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
  if (run.name.empty() || run.name == ".") run.name = fs::absolute(p).lexically_normal().filename().string();

  std::ifstream metrics(p / "metrics.jsonl");
  if (!metrics) {
    run.warnings.push_back("no metrics.jsonl");
  } else {
    std::string line;
    int64_t lineno = 0, bad = 0, first_bad = 0;
    while (std::getline(metrics, line)) {
      ++lineno;
      if (!apply_metrics_line(run, line) && bad++ == 0) first_bad = lineno;
    }
    // A run killed mid-write leaves a partial last line; that is worth a note, not a failure.
    if (bad > 0) run.warnings.push_back(fmt::format("metrics.jsonl: {} unreadable line(s), first at line {}", bad, first_bad));
  }
  load_config(run, p / "config.toml");
  std::string log;
  if (read_text(p / "train.log", &log)) run.log_tail = last_lines(log, 60, 16000);

  std::string pack_text;
  if (read_text(p / "pack.json", &pack_text)) {
    const json j = json::parse(pack_text, nullptr, false);
    if (j.is_object()) run.pack = parse_pack_json(j);
    else run.warnings.push_back("pack.json is not a JSON object");
  }
  std::vector<fs::path> eval_files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(p, ec)) {
    const std::string f = entry.path().filename().string();
    if (entry.is_regular_file() && f.starts_with("eval") && f.ends_with(".json")) eval_files.push_back(entry.path());
  }
  std::sort(eval_files.begin(), eval_files.end());
  for (const auto& f : eval_files) {
    std::string t;
    if (!read_text(f, &t)) continue;
    const json j = json::parse(t, nullptr, false);
    if (j.is_object()) run.evals.push_back(parse_eval_json(j, f.filename().string()));
    else run.warnings.push_back(fmt::format("{} is not a JSON object", f.filename().string()));
  }
  return run;
}

}  // namespace pgolf::report
