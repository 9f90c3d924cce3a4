#include <cstdio>

#include "build_info.h"
#include "cli/commands.h"
#include "core/memory.h"

namespace pgolf::cli {

void add_version_command(CLI::App& app) {
  auto* sub = app.add_subcommand("version", "Print version, commit, CUDA support and target architecture");
  sub->callback([] {
    std::printf("pgolf %s (commit %s)\n", PGOLF_VERSION, PGOLF_GIT_COMMIT);
#if PGOLF_CUDA
    std::printf("cuda: on (built for sm_90a + compute_90 PTX), devices visible: %d\n", cuda_device_count());
#else
    std::printf("cuda: off (CPU-only build)\n");
#endif
  });
}

}  // namespace pgolf::cli
