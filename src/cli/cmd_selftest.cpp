#include "cli/commands.h"
#include "core/error.h"

namespace pgolf::cli {

// Placeholder until this subcommand lands: it fails loudly instead of pretending to work.
void add_selftest_command(CLI::App& app) {
  auto* sub = app.add_subcommand("selftest", "Check every op (CPU reference, GPU parity) (not implemented yet)");
  sub->allow_extras();
  sub->callback([] { PG_FAIL("pgolf selftest is not implemented yet"); });
}

}  // namespace pgolf::cli
