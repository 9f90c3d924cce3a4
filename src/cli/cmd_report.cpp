// pgolf report: RUN_DIR -> RUN_DIR/report.html; several RUN_DIRs -> one comparison page (--out).
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "report/report.h"

namespace pgolf::cli {

void add_report_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "report", "Write RUN_DIR/report.html (curves, schedules, artifact bytes, eval phases, config); with several "
                "run directories, a comparison page overlaying them (--out FILE)");
  static std::vector<std::string> run_dirs;
  static std::string out;
  sub->add_option("run_dirs", run_dirs, "Run directories (as written by pgolf train)")->required()->check(CLI::ExistingDirectory);
  sub->add_option("--out,-o", out, "Output HTML file (default: RUN_DIR/report.html for one run; required for several)");
  sub->callback([] {
    if (run_dirs.size() == 1) {
      std::printf("%s\n", report::write_run_report(run_dirs[0], out).c_str());
      return;
    }
    PG_CHECK(!out.empty(), "pgolf report: {} run directories given; name the comparison page with --out FILE",
             run_dirs.size());
    report::write_comparison_report(run_dirs, out);
    std::printf("%s\n", out.c_str());
  });
}

}  // namespace pgolf::cli
