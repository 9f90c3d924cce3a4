#pragma once
// Rank setup from the launcher's environment: torchrun / `pgolf launch` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT) or OpenMPI's mpirun (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK, with
// MASTER_ADDR / MASTER_PORT still naming rank 0's rendezvous). With neither set: a single rank.
#include <string>

namespace pgolf::dist {

struct RankInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // single | torchrun | openmpi
};

// Reads the variables above. Throws naming the variable on a malformed or inconsistent value (rank outside
// [0, world), non-numeric, torchrun and OpenMPI variables that disagree).
RankInfo rank_info_from_env();

}  // namespace pgolf::dist
