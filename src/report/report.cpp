#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "data/file_util.h"
#include "report/html.h"
#include "report/report_parts.h"
#include "report/svg_chart.h"

namespace pgolf::report {

using parts::has_values;
using parts::series_of;

namespace {

LineChart chart(std::string title, std::string xl, std::string yl, bool ylog = false) {
  LineChart c;
  c.title = std::move(title);
  c.x.label = std::move(xl);
  c.y.label = std::move(yl);
  c.y.log = ylog;
  return c;
}

Series with(Series s, const std::string& color, bool markers = false, bool dashed = false) {
  s.color = color;
  s.markers = markers;
  s.dashed = dashed;
  return s;
}

std::string loss_section(const RunData& r) {
  std::vector<std::string> svgs;
  for (bool by_time : {false, true}) {
    double TrainPoint::*tx = by_time ? &TrainPoint::wallclock_s : &TrainPoint::step;
    double ValPoint::*vx = by_time ? &ValPoint::wallclock_s : &ValPoint::step;
    const std::string xl = by_time ? "training time (s)" : "step";
    LineChart loss = chart(by_time ? "Loss vs training time" : "Loss vs step", xl, "loss (nats/token)", true);
    loss.series.push_back(with(series_of("train loss", r.train, tx, &TrainPoint::train_loss), palette_color(0)));
    loss.series.push_back(with(series_of("val loss", r.val, vx, &ValPoint::val_loss), palette_color(1), true));
    svgs.push_back(render_line_chart(loss));
  }
  for (bool by_time : {false, true}) {
    LineChart bpb = chart(by_time ? "val_bpb vs training time" : "val_bpb vs step",
                          by_time ? "training time (s)" : "step", "bits per byte");
    bpb.series.push_back(with(series_of("val_bpb", r.val, by_time ? &ValPoint::wallclock_s : &ValPoint::step,
                                        &ValPoint::val_bpb),
                              palette_color(1), true));
    svgs.push_back(render_line_chart(bpb));
  }
  std::string notes;
  if (!r.val.empty() && !has_values(r.val, &ValPoint::val_bpb))
    notes = html_note("val_bpb is absent: the run had no tokenizer to count bytes (data.tokenizer empty).");
  return html_section("loss", "Loss and bits per byte", notes + html_chart_grid(svgs));
}

std::string schedule_section(const RunData& r) {
  LineChart lr = chart("Learning-rate multiplier", "step", "lr multiplier");
  lr.series.push_back(with(series_of("lr_mult", r.train, &TrainPoint::step, &TrainPoint::lr_mult), palette_color(2)));
  LineChart lr_t = chart("Learning-rate multiplier vs time", "training time (s)", "lr multiplier");
  lr_t.series.push_back(
      with(series_of("lr_mult", r.train, &TrainPoint::wallclock_s, &TrainPoint::lr_mult), palette_color(2)));
  LineChart mom = chart("Muon momentum (from config)", "step", "momentum");
  mom.series.push_back(with(parts::momentum_series(r, "muon momentum"), palette_color(4)));
  return html_section("schedules", "Schedules",
                      html_chart_grid({render_line_chart(lr), render_line_chart(lr_t), render_line_chart(mom)}));
}

std::string throughput_section(const RunData& r) {
  LineChart tok = chart("Throughput", "step", "tokens/s");
  tok.series.push_back(with(series_of("tokens/s", r.train, &TrainPoint::step, &TrainPoint::tokens_per_s), palette_color(3)));
  LineChart ms = chart("Step time", "step", "ms per step");
  ms.series.push_back(with(series_of("step_ms", r.train, &TrainPoint::step, &TrainPoint::step_ms), palette_color(5)));
  std::vector<std::string> svgs = {render_line_chart(tok), render_line_chart(ms)};
  if (has_values(r.train, &TrainPoint::gpu_mem_gib)) {
    LineChart mem = chart("GPU memory in use", "step", "GiB");
    mem.series.push_back(with(series_of("GPU memory", r.train, &TrainPoint::step, &TrainPoint::gpu_mem_gib), palette_color(6)));
    svgs.push_back(render_line_chart(mem));
  }
  std::string body = html_chart_grid(svgs);
  if (!has_values(r.train, &TrainPoint::gpu_mem_gib)) body += html_note("No GPU memory samples (a CPU run).");
  return html_section("throughput", "Throughput and memory", body);
}

std::string artifact_section(const RunData& r) {
  const PackInfo& p = r.pack;
  if (!p.present) return html_section("artifact", "Artifact", html_note("No pack.json in the run directory (run pgolf pack)."));
  std::vector<std::pair<std::string, std::string>> totals;
  totals.emplace_back("artifact bytes", std::isfinite(p.total_bytes) ? fmt::format("{:.0f} ({})", p.total_bytes, format_bytes(p.total_bytes)) : "-");
  totals.emplace_back("code bytes", std::isfinite(p.code_bytes) ? format_bytes(p.code_bytes) : "-");
  totals.emplace_back("counted bytes (artifact + code)",
                      std::isfinite(p.counted_bytes) ? fmt::format("{:.0f} ({})", p.counted_bytes, format_bytes(p.counted_bytes))
                                                     : "-");
  totals.emplace_back("limit", std::isfinite(p.limit_bytes) ? format_bytes(p.limit_bytes) : "-");
  // The limit counts the code too: the headroom is measured from the counted bytes when known.
  const double used = std::isfinite(p.counted_bytes) ? p.counted_bytes : p.total_bytes;
  if (std::isfinite(used) && std::isfinite(p.limit_bytes))
    totals.emplace_back("headroom", format_bytes(p.limit_bytes - used));

  BarChart groups;
  groups.title = p.tensor_bytes_estimated ? "Stored bytes per tensor group (estimated: the codes section shared out by raw bits)"
                                          : "Stored bytes per tensor group";
  groups.value_label = "bytes";
  groups.bytes = true;
  BarSeries gs{"bytes", {}, palette_color(0)};
  for (const auto& [g, b] : parts::bytes_by_group(p)) {
    groups.categories.push_back(g);
    gs.values.push_back(b);
  }
  groups.series.push_back(gs);
  BarChart comp;
  comp.title = "Stored bytes per compressor";
  comp.value_label = "bytes";
  comp.bytes = true;
  BarSeries cs{"bytes", {}, palette_color(3)};
  for (const auto& [c, b] : p.bytes_by_compressor) {
    comp.categories.push_back(c);
    cs.values.push_back(b);
  }
  comp.series.push_back(cs);

  // Quantization error per layer: one line per tensor group across the blocks.
  std::map<std::string, std::vector<std::pair<double, double>>> err, proxy;
  for (const auto& t : p.tensors) {
    if (t.layer < 0) continue;
    if (std::isfinite(t.rel_error)) err[t.group].emplace_back(t.layer, t.rel_error);
    if (std::isfinite(t.proxy_error)) proxy[t.group].emplace_back(t.layer, t.proxy_error);
  }
  auto layer_chart = [](const std::string& title, const std::string& yl, auto& by_group) {
    LineChart c = chart(title, "layer", yl, true);
    size_t i = 0;
    for (auto& [g, pts] : by_group) {
      std::sort(pts.begin(), pts.end());
      Series s;
      s.name = g;
      s.color = palette_color(i++);
      s.markers = true;
      for (auto [x, y] : pts) s.x.push_back(x), s.y.push_back(y);
      c.series.push_back(s);
    }
    return render_line_chart(c);
  };
  std::vector<std::string> svgs = {render_bar_chart(groups), render_bar_chart(comp)};
  if (!err.empty()) svgs.push_back(layer_chart("Quantization error per layer", "relative ||W-Q|| / ||W||", err));
  if (!proxy.empty()) svgs.push_back(layer_chart("Output error proxy per layer", "relative ||(W-Q)X||", proxy));

  std::vector<std::vector<std::string>> rows;
  for (const auto& t : p.tensors)
    rows.push_back({t.name, t.group, t.compressor.empty() ? "-" : t.compressor, parts::fmt_num(t.bits, "{:.2f}"),
                    parts::fmt_num(t.bytes, "{:.0f}"), parts::fmt_num(t.rel_error, "{:.3e}"),
                    parts::fmt_num(t.proxy_error, "{:.3e}")});
  std::string body = html_kv_table(totals) + html_chart_grid(svgs);
  if (err.empty()) body += html_note("No per-layer quantization error in pack.json.");
  if (!rows.empty())
    body += "<details><summary>Per-tensor table</summary>" +
            html_table({"tensor", "group", "compressor", "bits", "bytes", "rel error", "proxy error"}, rows) +
            "</details>";
  return html_section("artifact", "Artifact", body);
}

std::string eval_section(const RunData& r) {
  std::string body;
  if (!r.val.empty()) {
    double total_ms = 0;
    for (const auto& v : r.val)
      if (std::isfinite(v.eval_ms)) total_ms += v.eval_ms;
    body += html_note(fmt::format("{} validation pass(es) during training, {:.1f} s in all.", r.val.size(), total_ms / 1000));
  }
  if (r.evals.empty()) body += html_note("No eval*.json in the run directory (run pgolf eval --json).");
  for (const auto& e : r.evals) {
    body += "<h3>" + escape_xml(e.file) + "</h3>";
    body += html_kv_table(e.scalars);
    if (!e.phases.empty()) {
      BarChart b;
      b.title = "Time per evaluation phase";
      b.value_label = "seconds";
      BarSeries s{"seconds", {}, palette_color(4)};
      for (const auto& ph : e.phases) {
        b.categories.push_back(ph.name.empty() ? "?" : ph.name);
        s.values.push_back(ph.seconds);
      }
      b.series.push_back(s);
      body += html_chart_grid({render_bar_chart(b)});
    }
  }
  return html_section("eval", "Evaluation", body);
}

std::string events_section(const RunData& r) {
  std::string body;
  auto num = [](const nlohmann::json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? parts::fmt_num(j[k].get<double>(), "{:.6g}") : std::string("-");
  };
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : r.checkpoints)
    rows.push_back({"checkpoint", num(c, "step"), num(c, "wallclock_s"), c.value("why", std::string("-"))});
  for (const auto& e : r.errors)
    rows.push_back({"error", num(e, "step"), num(e, "wallclock_s"), "train_loss " + num(e, "train_loss")});
  if (rows.empty()) return {};
  return html_section("events", "Checkpoints and errors", html_table({"event", "step", "time (s)", "detail"}, rows));
}

}  // namespace

std::string build_run_report(const RunData& r) {
  std::string body = "<h1>pgolf run: " + escape_xml(r.name) + "</h1>";
  body += html_note(r.dir + " | " + parts::generator_line());
  body += "<nav><a href=\"#summary\">summary</a><a href=\"#loss\">loss</a><a href=\"#schedules\">schedules</a>"
          "<a href=\"#throughput\">throughput</a><a href=\"#artifact\">artifact</a><a href=\"#eval\">evaluation</a>"
          "<a href=\"#config\">config</a><a href=\"#log\">log</a></nav>";
  body += html_warnings(r.warnings);
  body += html_section("summary", "Summary", html_kv_table(parts::summary_rows(r)));
  body += loss_section(r) + schedule_section(r) + throughput_section(r) + artifact_section(r) + eval_section(r) +
          events_section(r);
  body += html_section("config", "Resolved config (config.toml)",
                       r.config_toml.empty() ? html_note("No config.toml.") : html_pre(r.config_toml));
  body += html_section("log", "End of train.log", r.log_tail.empty() ? html_note("No train.log.") : html_pre(r.log_tail));
  return html_page("pgolf run " + r.name, body);
}

std::string write_run_report(const std::string& run_dir, const std::string& out_path) {
  const RunData run = load_run(run_dir);
  const std::string path = out_path.empty() ? run_dir + "/report.html" : out_path;
  data::write_file_atomic(path, build_run_report(run));
  return path;
}

void write_comparison_report(const std::vector<std::string>& run_dirs, const std::string& out_path) {
  std::vector<RunData> runs;
  for (const auto& d : run_dirs) runs.push_back(load_run(d));
  data::write_file_atomic(out_path, build_comparison_report(runs));
}

}  // namespace pgolf::report
