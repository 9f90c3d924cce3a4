#include "dist/env.h"

#include <cerrno>
#include <cstdlib>
#include <optional>

#include "core/error.h"

namespace pgolf::dist {
namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

std::optional<int> env_int(const char* name) {
  auto s = env(name);
  if (!s) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(s->c_str(), &end, 10);
  PG_CHECK(errno == 0 && end && *end == '\0' && v >= 0 && v <= 1000000,
           "environment variable {}=\"{}\" is not a non-negative integer", name, *s);
  return static_cast<int>(v);
}

}  // namespace

RankInfo rank_info_from_env() {
  RankInfo info;
  const auto t_rank = env_int("RANK"), t_world = env_int("WORLD_SIZE"), t_local = env_int("LOCAL_RANK");
  const auto m_rank = env_int("OMPI_COMM_WORLD_RANK"), m_world = env_int("OMPI_COMM_WORLD_SIZE"),
             m_local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
  const bool torchrun = t_rank || t_world, openmpi = m_rank || m_world;
  if (torchrun) {
    PG_CHECK(t_rank && t_world, "torchrun environment incomplete: RANK and WORLD_SIZE must both be set (RANK={}, "
             "WORLD_SIZE={})", env("RANK").value_or("<unset>"), env("WORLD_SIZE").value_or("<unset>"));
    info.rank = *t_rank;
    info.world = *t_world;
    info.local_rank = t_local.value_or(*t_rank);
    info.source = "torchrun";
  }
  if (openmpi) {
    PG_CHECK(m_rank && m_world, "OpenMPI environment incomplete: OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE must "
             "both be set");
    if (torchrun) {
      PG_CHECK(*m_rank == info.rank && *m_world == info.world,
               "RANK/WORLD_SIZE ({}/{}) and OMPI_COMM_WORLD_RANK/SIZE ({}/{}) disagree: launched twice?", info.rank,
               info.world, *m_rank, *m_world);
    } else {
      info.rank = *m_rank;
      info.world = *m_world;
      info.local_rank = m_local.value_or(*m_rank);
      info.source = "openmpi";
    }
  }
  PG_CHECK(info.world >= 1, "WORLD_SIZE must be >= 1 (got {})", info.world);
  PG_CHECK(info.rank < info.world, "rank {} is outside [0, {}) (WORLD_SIZE)", info.rank, info.world);
  if (auto a = env("MASTER_ADDR")) info.master_addr = *a;
  if (auto p = env_int("MASTER_PORT")) {
    PG_CHECK(*p >= 1 && *p <= 65535, "MASTER_PORT={} is not a TCP port", *p);
    info.master_port = *p;
  }
  return info;
}

}  // namespace pgolf::dist
