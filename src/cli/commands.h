#pragma once
// Each subcommand family registers itself on the root app; main.cpp calls these in order.
#include <CLI/CLI.hpp>

namespace pgolf::cli {

void add_version_command(CLI::App& app);   // cmd_version.cpp
void add_data_commands(CLI::App& app);     // cmd_data.cpp: data tokenizer|encode|inspect|bytes|default
void add_train_command(CLI::App& app);     // cmd_train.cpp
void add_selftest_command(CLI::App& app);  // cmd_selftest.cpp: CPU/GPU op parity
void add_bench_command(CLI::App& app);     // cmd_bench.cpp
void add_bench_step_command(CLI::App* bench);  // bench_step.cpp: bench step --config FILE
void add_bench_kernels_command(CLI::App* bench);  // bench_preset_kernels.cpp: bench kernels --config FILE
void add_pack_commands(CLI::App& app);     // cmd_pack.cpp: pack RUN_DIR, info FILE
void add_eval_command(CLI::App& app);      // cmd_eval.cpp: eval (plain / sliding / doc, TTT, --audit)
void add_report_command(CLI::App& app);    // cmd_report.cpp: report RUN_DIR [RUN_DIR...] [--out FILE]
void add_launch_command(CLI::App& app);    // cmd_launch.cpp: launch --gpus N [--loopback] -- train ...

}  // namespace pgolf::cli
