#pragma once
// Start-up handshake over TCP before any collective: rank 0 listens on MASTER_ADDR:MASTER_PORT, every other rank
// connects (retrying until rank 0 is up) and sends its rank, world size and config hash. Rank 0 checks them all
// (world sizes equal, ranks distinct, hashes equal) and answers each with either the payload it shares (the NCCL
// unique id) or the reason it refuses; then every rank returns the payload or throws that reason. A rank that never
// arrives makes rank 0 (and, by timing out, the others) fail after timeout_s naming what is missing.
// Only this handshake uses TCP: tensors always go through NCCL.
#include <cstdint>
#include <string>

#include "dist/env.h"

namespace pgolf::dist {

// Rank 0 passes the payload to share; the others pass "" and receive it. Throws pgolf::Error with a clear reason.
std::string rendezvous(const RankInfo& info, uint64_t config_hash, const std::string& root_payload, double timeout_s);

}  // namespace pgolf::dist
