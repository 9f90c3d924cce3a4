#pragma once
// Everything the report reads from a run directory, parsed tolerantly: a missing file or a field
// a later version adds/removes leaves that part of the report empty instead of failing.
//   metrics.jsonl  events from train/run_log (types train, val, final, checkpoint, error, summary)
//   config.toml    the resolved config (shown verbatim; optim.muon_* gives the momentum schedule)
//   train.log      the human-readable log (its tail is shown)
//   pack.json      artifact bytes per tensor / compressor and quantization error (docs/REPORT.md)
//   eval*.json     evaluator results: scalars and time per phase (docs/REPORT.md)
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pgolf::report {

constexpr double kNaN = __builtin_nan("");

struct TrainPoint {
  double step = kNaN, wallclock_s = kNaN, train_loss = kNaN, lr_mult = kNaN, step_ms = kNaN, tokens_per_s = kNaN,
         gpu_mem_gib = kNaN;
};

struct ValPoint {
  double step = kNaN, wallclock_s = kNaN, val_loss = kNaN, val_bpb = kNaN, eval_ms = kNaN;
  bool final = false;
};

// One tensor of pack.json.
struct PackTensor {
  std::string name, group, compressor;
  int layer = -1;  // the block index found in the name ("blocks.3.attn.q" -> 3), -1 if none
  double bytes = kNaN, raw_bytes = kNaN, bits = kNaN, rel_error = kNaN, proxy_error = kNaN;
};

struct PackInfo {
  bool present = false;
  double total_bytes = kNaN, code_bytes = kNaN, limit_bytes = kNaN;
  double counted_bytes = kNaN;  // what the 16 MB limit counts: artifact + code (pgolf pack's counted_bytes)
  // pgolf pack compresses all codes in one section, so tensors carry no stored bytes of their own; their
  // bytes are then that section's stored bytes shared out by raw code bits (numel x bits): an estimate.
  bool tensor_bytes_estimated = false;
  std::vector<PackTensor> tensors;
  std::vector<std::pair<std::string, double>> bytes_by_compressor;  // stored bytes, in first-seen order
  nlohmann::json raw;                                               // the whole file, for the scalar table
};

struct EvalPhase {
  std::string name;
  double seconds = kNaN;
};

struct EvalInfo {
  std::string file;                 // basename, e.g. eval.json
  std::vector<std::pair<std::string, std::string>> scalars;  // top-level scalar fields, formatted
  std::vector<EvalPhase> phases;
};

struct RunData {
  std::string dir, name;
  std::vector<TrainPoint> train;  // in step order; steps redone after a resume replace the earlier ones
  std::vector<ValPoint> val;
  std::vector<nlohmann::json> checkpoints, errors;
  nlohmann::json summary;  // the last summary event, or null
  std::string config_toml;
  // Muon momentum schedule from config.toml (NaN when absent).
  double momentum = kNaN, momentum_start = kNaN, momentum_warmup_steps = kNaN;
  std::string log_tail;  // last lines of train.log
  PackInfo pack;
  std::vector<EvalInfo> evals;
  std::vector<std::string> warnings;  // unreadable lines or files, shown at the top of the report
};

// Reads what exists under dir; throws only when dir itself is not a directory.
RunData load_run(const std::string& dir);

// Group and layer of a tensor name: the first all-digit dotted component is the layer and becomes
// "*" in the group ("blocks.3.attn.q.weight" -> "blocks.*.attn.q.weight", 3).
std::pair<std::string, int> tensor_group(const std::string& name);

// Applies one metrics.jsonl line to the run (exposed for tests). Returns false for a line that is
// not a JSON object.
bool apply_metrics_line(RunData& run, const std::string& line);

// Parses an evaluator JSON document (exposed for tests).
EvalInfo parse_eval_json(const nlohmann::json& j, const std::string& file);
PackInfo parse_pack_json(const nlohmann::json& j);

}  // namespace pgolf::report
