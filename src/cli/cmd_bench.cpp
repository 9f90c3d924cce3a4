// `pgolf bench <kernel>`: GPU kernel benchmarks (median of --reps runs timed with CUDA events after
// --warmup untimed runs), printed as a table and optionally written to --json.
//
// Each kernel bench is one entry of the list in add_bench_command: a name, a description, a function that
// adds its own flags, and a function that runs it and returns table rows. Add a bench by adding an entry.
// `pgolf bench step --config ...`, a whole training step with an op profile, is in bench_step.cpp;
// `pgolf bench kernels --config ...`, each op of a preset's step alone, in bench_preset_kernels.cpp.
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_kernels.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/memory.h"

namespace pgolf::cli {

namespace {

struct KernelBench {
  const char* name;
  const char* description;
  std::function<void(CLI::App*)> add_flags;
  std::function<std::vector<bench::Row>(const bench::Options&)> run;  // empty result = nothing to print
};

void add_common_flags(CLI::App* sub, bench::Options* o) {
  sub->add_option("--warmup", o->warmup, "Untimed runs before timing")->capture_default_str();
  sub->add_option("--reps", o->reps, "Timed runs; the median is reported")->capture_default_str();
  sub->add_option("--json", o->json, "Also write the results to this JSON file");
}

#if PGOLF_CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif

void require_gpu(const char* what) {
  PG_CHECK(cuda_available(), "pgolf bench {}: needs a CUDA GPU (this build has CUDA {}, {} devices visible)", what,
           kBuiltWithCuda ? "on" : "off", cuda_device_count());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* bench_cmd = app.add_subcommand("bench", "Benchmark GPU kernels (attention, matmul), a preset's ops one by one (kernels) and whole training steps (step)");
  bench_cmd->require_subcommand(1);

  // State shared between flag parsing and the callbacks; lives as long as the app.
  auto opts = std::make_shared<bench::Options>();
  auto attn = std::make_shared<bench::AttnShape>();
  auto check = std::make_shared<bool>(false);
  auto no_causal = std::make_shared<bool>(false);

  std::vector<KernelBench> benches = {
      {"attention",
       "Causal bf16 flash attention, forward and backward (default: the record shape B=48 T=2048 8/4 heads d=64); "
       "--check compares the GPU op with the CPU op on small shapes first",
       [=](CLI::App* sub) {
         sub->add_option("--B", attn->B, "Batch")->capture_default_str();
         sub->add_option("--T", attn->T, "Sequence length")->capture_default_str();
         sub->add_option("--hq", attn->Hq, "Query heads")->capture_default_str();
         sub->add_option("--hkv", attn->Hkv, "Key/value heads")->capture_default_str();
         sub->add_option("--d", attn->D, "Head dimension (64 = tensor-core path)")->capture_default_str();
         sub->add_flag("--check", *check, "Check against the CPU op (max relative errors) before timing");
         sub->add_flag("--no-causal", *no_causal, "Full (non-causal) attention");
       },
       [=](const bench::Options& o) {
         attn->causal = !*no_causal;
         if (*check) PG_CHECK(bench::check_attention_all(), "pgolf bench attention --check: GPU and CPU disagree");
         return bench::bench_attention(o, *attn);
       }},
      {"matmul", "cuBLASLt bf16 matmuls at the ANCHORS.md training shapes, with % of PyTorch's rate",
       [](CLI::App*) {}, [](const bench::Options& o) { return bench::bench_matmul(o); }},
  };

  add_bench_step_command(bench_cmd);
  add_bench_kernels_command(bench_cmd);
  for (const KernelBench& kb : benches) {
    auto* sub = bench_cmd->add_subcommand(kb.name, kb.description);
    add_common_flags(sub, opts.get());
    kb.add_flags(sub);
    std::string name = kb.name;
    auto run = kb.run;
    sub->callback([opts, name, run] {
      require_gpu(name.c_str());
      std::vector<bench::Row> rows = run(*opts);
      bench::print_table(fmt::format("pgolf bench {} (median of {} runs after {} warm-up)", name, opts->reps,
                                     opts->warmup),
                         rows);
      if (!opts->json.empty()) bench::write_json(opts->json, name, rows);
    });
  }
}

}  // namespace pgolf::cli
