#include "report/report_parts.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "build_info.h"
#include "train/schedule.h"

namespace pgolf::report::parts {

Series momentum_series(const RunData& run, const std::string& name) {
  Series s;
  s.name = name;
  if (!std::isfinite(run.momentum) || !std::isfinite(run.momentum_start) || !std::isfinite(run.momentum_warmup_steps))
    return s;
  // The trainer's own formula, so the plot cannot drift from what the optimizer used.
  train::OptimSection o;
  o.muon_momentum = run.momentum;
  o.muon_momentum_warmup_start = run.momentum_start;
  o.muon_momentum_warmup_steps = static_cast<int64_t>(run.momentum_warmup_steps);
  for (const auto& p : run.train) {
    if (!std::isfinite(p.step)) continue;
    // The train event's step counts steps done; the momentum applied in that step used step - 1.
    s.x.push_back(p.step);
    s.y.push_back(train::muon_momentum_at(o, static_cast<int64_t>(p.step) - 1));
  }
  return s;
}

std::string fmt_num(double v, const char* spec) {
  if (!std::isfinite(v)) return "-";
  return fmt::format(fmt::runtime(spec), v);
}

std::vector<std::pair<std::string, std::string>> summary_rows(const RunData& run) {
  std::vector<std::pair<std::string, std::string>> rows;
  auto num = [&](const char* key) {
    auto it = run.summary.is_object() ? run.summary.find(key) : run.summary.end();
    return run.summary.is_object() && it != run.summary.end() && it->is_number() ? it->get<double>() : kNaN;
  };
  const bool finished = run.summary.is_object();
  rows.emplace_back("status", finished ? "finished"
                              : !run.errors.empty() ? "stopped on an error"
                              : run.train.empty()   ? "no training steps recorded"
                                                    : "unfinished (no summary event)");
  const double steps = finished ? num("step") : run.train.empty() ? kNaN : run.train.back().step;
  const double secs = finished ? num("wallclock_s") : run.train.empty() ? kNaN : run.train.back().wallclock_s;
  rows.emplace_back("steps", fmt_num(steps, "{:.0f}"));
  rows.emplace_back("training time", std::isfinite(secs) ? fmt::format("{:.1f} s", secs) : "-");
  const ValPoint* last_val = run.val.empty() ? nullptr : &run.val.back();
  rows.emplace_back("val_loss", fmt_num(finished ? num("val_loss") : last_val ? last_val->val_loss : kNaN));
  rows.emplace_back("val_bpb", fmt_num(finished ? num("val_bpb") : last_val ? last_val->val_bpb : kNaN));
  if (finished) {
    rows.emplace_back("int8+zlib val_bpb", fmt_num(num("int8_val_bpb")));
    rows.emplace_back("int8+zlib bytes", std::isfinite(num("int8_zlib_bytes")) && num("int8_zlib_bytes") > 0
                                             ? format_bytes(num("int8_zlib_bytes"))
                                             : "-");
    rows.emplace_back("steady tokens/s", fmt_num(num("tokens_per_s"), "{:.0f}"));
    rows.emplace_back("MFU", std::isfinite(num("mfu")) ? fmt::format("{:.1f}%", 100 * num("mfu")) : "-");
    rows.emplace_back("peak GPU memory",
                      num("peak_gpu_bytes") > 0 ? fmt::format("{:.2f} GiB", num("peak_gpu_bytes") / (1 << 30)) : "-");
    rows.emplace_back("parameters", fmt_num(num("n_params"), "{:.0f}"));
  }
  if (run.pack.present) {
    rows.emplace_back("artifact bytes", std::isfinite(run.pack.total_bytes) ? format_bytes(run.pack.total_bytes) : "-");
    rows.emplace_back("counted bytes", std::isfinite(run.pack.counted_bytes) ? format_bytes(run.pack.counted_bytes) : "-");
    if (std::isfinite(run.pack.limit_bytes)) rows.emplace_back("artifact limit", format_bytes(run.pack.limit_bytes));
  }
  for (const auto& e : run.evals)
    for (const auto& [k, v] : e.scalars)
      if (k == "val_bpb" || k == "val_loss") rows.emplace_back(e.file + ": " + k, v);
  return rows;
}

std::string generator_line() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
  return fmt::format("report by pgolf {} (commit {}), generated {}", PGOLF_VERSION, PGOLF_GIT_COMMIT, when);
}

std::vector<std::pair<std::string, double>> bytes_by_group(const PackInfo& p) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& t : p.tensors) {
    if (!std::isfinite(t.bytes)) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& g) { return g.first == t.group; });
    if (it == out.end()) out.emplace_back(t.group, t.bytes);
    else it->second += t.bytes;
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

}  // namespace pgolf::report::parts
