#pragma once
// Pieces shared by the single-run page (report.cpp) and the comparison page (compare.cpp).
#include <string>
#include <utility>
#include <vector>

#include "report/run_data.h"
#include "report/svg_chart.h"

namespace pgolf::report::parts {

// A series from one member of each point against another (e.g. &TrainPoint::step, &TrainPoint::train_loss).
template <class P>
Series series_of(const std::string& name, const std::vector<P>& pts, double P::*x, double P::*y) {
  Series s;
  s.name = name;
  for (const auto& p : pts) {
    s.x.push_back(p.*x);
    s.y.push_back(p.*y);
  }
  return s;
}

// True when some point has a finite value of the member.
template <class P>
bool has_values(const std::vector<P>& pts, double P::*m) {
  for (const auto& p : pts)
    if (p.*m == p.*m) return true;
  return false;
}

// Muon momentum at each train step, from the config's schedule (empty when the config lacks it).
Series momentum_series(const RunData& run, const std::string& name);

// Key numbers of a run: from the summary event when the run finished, else from its last events.
std::vector<std::pair<std::string, std::string>> summary_rows(const RunData& run);

// "pgolf 0.1.0 (commit abc), generated 2025-01-01 12:00 UTC"
std::string generator_line();

std::string fmt_num(double v, const char* spec = "{:.4f}");  // "-" for NaN

// Stored bytes summed per tensor group, largest first.
std::vector<std::pair<std::string, double>> bytes_by_group(const PackInfo& p);

}  // namespace pgolf::report::parts
