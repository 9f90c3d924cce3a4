#pragma once
// Loopback transport: `world` ranks as threads of one process sharing a LoopbackHub, CPU tensors only.
// Reductions add the ranks' inputs in rank order, one after the other, into a single f32 accumulator, so a
// world-W run that reduces each micro-step with accumulate_sum reproduces, bit for bit, a world-1 run that adds
// the same micro-step gradients one after the other (docs/DISTRIBUTED.md, "What is bit-identical").
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"

namespace pgolf::dist {

class LoopbackHub;

// Creates the hub and one communicator per rank; comms[r] must only be used by rank r's thread.
std::vector<std::unique_ptr<Communicator>> make_loopback_comms(int world, double timeout_s = 30);

// Runs fn(comm) on `world` threads (rank r on comms[r]) and joins them. If a rank throws, the hub is aborted so
// the others fail fast instead of waiting for the timeout; the first failure is rethrown as
// "loopback rank R failed: ..." (the failing rank's own error, not the others' "aborted" ones).
void run_loopback(int world, const std::function<void(Communicator&)>& fn, double timeout_s = 30);

}  // namespace pgolf::dist
