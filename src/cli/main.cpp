// pgolf: raw text to the best language model that fits in 16 MB, in one C++/CUDA program.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"pgolf: train, quantize, pack and score parameter-golf language models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  pgolf::cli::add_version_command(app);
  pgolf::cli::add_data_commands(app);
  pgolf::cli::add_train_command(app);
  pgolf::cli::add_selftest_command(app);
  pgolf::cli::add_bench_command(app);
  pgolf::cli::add_pack_commands(app);
  pgolf::cli::add_eval_command(app);
  pgolf::cli::add_report_command(app);
  pgolf::cli::add_launch_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const pgolf::Error& e) {
    std::fprintf(stderr, "pgolf: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pgolf: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
