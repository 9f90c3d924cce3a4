#include "cli/commands.h"
#include "core/error.h"

namespace pgolf::cli {

// Placeholder until this subcommand lands: it fails loudly instead of pretending to work.
void add_data_commands(CLI::App& app) {
  auto* sub = app.add_subcommand("data", "Tokenizers, shards and byte accounting (not implemented yet)");
  sub->allow_extras();
  sub->callback([] { PG_FAIL("pgolf data is not implemented yet"); });
}

}  // namespace pgolf::cli
