#include "cli/commands.h"
#include "core/error.h"

namespace pgolf::cli {

// Placeholder until this subcommand lands: it fails loudly instead of pretending to work.
void add_bench_command(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "Benchmark kernels and whole training steps (not implemented yet)");
  sub->allow_extras();
  sub->callback([] { PG_FAIL("pgolf bench is not implemented yet"); });
}

}  // namespace pgolf::cli
