// The comparison page: several runs overlaid, one colour per run.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "report/html.h"
#include "report/report.h"
#include "report/report_parts.h"
#include "report/svg_chart.h"

namespace pgolf::report {

namespace {

// Runs with the same folder name are told apart by their full path.
std::vector<std::string> display_names(const std::vector<RunData>& runs) {
  std::vector<std::string> names;
  for (const auto& r : runs) {
    const bool clash = std::count_if(runs.begin(), runs.end(), [&](const RunData& o) { return o.name == r.name; }) > 1;
    names.push_back(clash ? r.dir : r.name);
  }
  return names;
}

template <class P>
LineChart overlay(const std::string& title, const std::string& xl, const std::string& yl, bool ylog,
                  const std::vector<RunData>& runs, const std::vector<std::string>& names,
                  const std::vector<P> RunData::*points, double P::*x, double P::*y, bool markers) {
  LineChart c;
  c.title = title;
  c.x.label = xl;
  c.y.label = yl;
  c.y.log = ylog;
  c.width = 580;
  c.height = 340;
  for (size_t i = 0; i < runs.size(); ++i) {
    Series s = parts::series_of(names[i], runs[i].*points, x, y);
    s.color = palette_color(i);
    s.markers = markers;
    c.series.push_back(std::move(s));
  }
  return c;
}

BarChart grouped_bars(const std::string& title, const std::string& unit, bool bytes,
                      const std::vector<std::vector<std::pair<std::string, double>>>& per_run,
                      const std::vector<std::string>& names) {
  BarChart b;
  b.title = title;
  b.value_label = unit;
  b.bytes = bytes;
  b.width = 1180;
  for (const auto& run : per_run)
    for (const auto& [cat, v] : run)
      if (std::find(b.categories.begin(), b.categories.end(), cat) == b.categories.end()) b.categories.push_back(cat);
  for (size_t i = 0; i < per_run.size(); ++i) {
    BarSeries s{names[i], std::vector<double>(b.categories.size(), kNaN), palette_color(i)};
    for (const auto& [cat, v] : per_run[i])
      s.values[static_cast<size_t>(std::find(b.categories.begin(), b.categories.end(), cat) - b.categories.begin())] = v;
    b.series.push_back(std::move(s));
  }
  return b;
}

}  // namespace

std::string build_comparison_report(const std::vector<RunData>& runs) {
  const auto names = display_names(runs);
  std::string body = fmt::format("<h1>pgolf: {} runs compared</h1>", runs.size());
  body += html_note(parts::generator_line());

  std::vector<std::string> header = {"run"};
  std::vector<std::vector<std::string>> rows(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto summary = parts::summary_rows(runs[i]);
    if (i == 0)
      for (const auto& [k, v] : summary) header.push_back(k);
    rows[i].push_back(names[i]);
    // Columns follow the first run's rows; a run lacking one shows "-".
    for (size_t h = 1; h < header.size(); ++h) {
      auto it = std::find_if(summary.begin(), summary.end(), [&](const auto& kv) { return kv.first == header[h]; });
      rows[i].push_back(it == summary.end() ? "-" : it->second);
    }
  }
  body += html_section("summary", "Runs", html_table(header, rows));

  std::vector<std::string> warnings;
  for (size_t i = 0; i < runs.size(); ++i)
    for (const auto& w : runs[i].warnings) warnings.push_back(names[i] + ": " + w);
  body += html_warnings(warnings);

  std::vector<std::string> loss_svgs = {
      render_line_chart(overlay("Train loss vs step", "step", "loss", true, runs, names, &RunData::train,
                                &TrainPoint::step, &TrainPoint::train_loss, false)),
      render_line_chart(overlay("Train loss vs training time", "training time (s)", "loss", true, runs, names,
                                &RunData::train, &TrainPoint::wallclock_s, &TrainPoint::train_loss, false)),
      render_line_chart(overlay("val_bpb vs step", "step", "bits per byte", false, runs, names, &RunData::val,
                                &ValPoint::step, &ValPoint::val_bpb, true)),
      render_line_chart(overlay("val_bpb vs training time", "training time (s)", "bits per byte", false, runs, names,
                                &RunData::val, &ValPoint::wallclock_s, &ValPoint::val_bpb, true)),
      render_line_chart(overlay("Val loss vs step", "step", "loss", true, runs, names, &RunData::val, &ValPoint::step,
                                &ValPoint::val_loss, true)),
      render_line_chart(overlay("Val loss vs training time", "training time (s)", "loss", true, runs, names,
                                &RunData::val, &ValPoint::wallclock_s, &ValPoint::val_loss, true)),
  };
  body += html_section("loss", "Loss and bits per byte", html_chart_grid(loss_svgs));

  std::vector<std::string> sched_svgs = {
      render_line_chart(overlay("Learning-rate multiplier", "step", "lr multiplier", false, runs, names,
                                &RunData::train, &TrainPoint::step, &TrainPoint::lr_mult, false)),
      render_line_chart(overlay("Throughput", "step", "tokens/s", false, runs, names, &RunData::train,
                                &TrainPoint::step, &TrainPoint::tokens_per_s, false)),
      render_line_chart(overlay("Step time", "step", "ms per step", false, runs, names, &RunData::train,
                                &TrainPoint::step, &TrainPoint::step_ms, false)),
  };
  bool any_mem = false;
  for (const auto& r : runs) any_mem = any_mem || parts::has_values(r.train, &TrainPoint::gpu_mem_gib);
  if (any_mem)
    sched_svgs.push_back(render_line_chart(overlay("GPU memory in use", "step", "GiB", false, runs, names,
                                                   &RunData::train, &TrainPoint::step, &TrainPoint::gpu_mem_gib, false)));
  body += html_section("schedules", "Schedules and throughput", html_chart_grid(sched_svgs));

  std::vector<std::vector<std::pair<std::string, double>>> groups, comps, phases;
  bool any_pack = false, any_phase = false;
  for (const auto& r : runs) {
    any_pack = any_pack || r.pack.present;
    groups.push_back(parts::bytes_by_group(r.pack));
    comps.push_back(r.pack.bytes_by_compressor);
    std::vector<std::pair<std::string, double>> ph;
    if (!r.evals.empty())
      for (const auto& p : r.evals.back().phases) ph.emplace_back(p.name, p.seconds);
    any_phase = any_phase || !ph.empty();
    phases.push_back(std::move(ph));
  }
  if (any_pack)
    body += html_section("artifact", "Artifact",
                         html_chart_grid({render_bar_chart(grouped_bars("Stored bytes per tensor group", "bytes", true, groups, names)),
                                          render_bar_chart(grouped_bars("Stored bytes per compressor", "bytes", true, comps, names))}));
  if (any_phase)
    body += html_section("eval", "Evaluation phases (last eval*.json of each run)",
                         html_chart_grid({render_bar_chart(grouped_bars("Time per phase", "seconds", false, phases, names))}));
  return html_page(fmt::format("pgolf: {} runs compared", runs.size()), body);
}

}  // namespace pgolf::report
