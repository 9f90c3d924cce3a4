#pragma once
// The run report: one self-contained HTML page (inline CSS and SVG, no scripts, no network) with
// the curves, schedules, throughput, artifact bytes, quantization error, evaluation phases and the
// resolved config of a run; and a comparison page overlaying several runs. docs/REPORT.md.
#include <string>
#include <vector>

#include "report/run_data.h"

namespace pgolf::report {

std::string build_run_report(const RunData& run);
std::string build_comparison_report(const std::vector<RunData>& runs);

// Loads run_dir and writes its page atomically to out_path (default run_dir/report.html); returns
// the path written.
std::string write_run_report(const std::string& run_dir, const std::string& out_path = "");
// Loads every run and writes the comparison page to out_path atomically.
void write_comparison_report(const std::vector<std::string>& run_dirs, const std::string& out_path);

}  // namespace pgolf::report
