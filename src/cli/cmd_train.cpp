#include "cli/commands.h"
#include "core/error.h"

namespace pgolf::cli {

// Placeholder until this subcommand lands: it fails loudly instead of pretending to work.
void add_train_command(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "Train a model from a config (not implemented yet)");
  sub->allow_extras();
  sub->callback([] { PG_FAIL("pgolf train is not implemented yet"); });
}

}  // namespace pgolf::cli
