#pragma once
// Collective communication between the ranks of a data-parallel run (issue 10, TECHNIQUES.md §4.4/§6.2).
//
// One interface, two transports:
//   - LoopbackComm (loopback_comm.h): ranks are threads of one process, tensors live on the CPU, and every
//     reduction sums the ranks' inputs in rank order (0, 1, 2, ...), so results are deterministic and
//     reproducible bit for bit (CI runs world sizes 2-4 this way).
//   - NcclComm (nccl_comm.cpp, only when built with PGOLF_NCCL): CUDA tensors, NCCL collectives; the unique id is
//     exchanged over a TCP rendezvous (rendezvous.h). NCCL does not promise a summation order.
// Every call is collective: all ranks must make the same calls in the same order with the same sizes.
// A rank that does not arrive within timeout_s() makes the others fail with an error naming the operation.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/env.h"

namespace pgolf::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string name() const = 0;  // "loopback" | "nccl"
  virtual double timeout_s() const = 0;

  // In place: buf = sum over ranks of buf (f32).
  virtual void all_reduce_sum(const Tensor& buf) = 0;
  // In place: buf = mean over ranks (sum, then one multiply by 1/world).
  void all_reduce_avg(const Tensor& buf);
  // Starts buf = sum over ranks (in place) after the work queued so far on the current stream and returns at
  // once; the result is there after wait_async(). Lets gradient reductions overlap the rest of the backward.
  // The loopback reduces at once (same summation as all_reduce_sum, so results are identical bit for bit).
  virtual void all_reduce_sum_async(const Tensor& buf) { all_reduce_sum(buf); }
  // Starts a sum over ranks into root's buf (in place) after the work queued so far on the current stream and returns
  // at once; after wait_async() root's buf holds the sum. The other ranks' buf is only read (NCCL leaves it as it
  // was; so does the loopback). Parallel Muon sends each matrix's gradient to its owner this way during the backward.
  // The loopback reduces at once, adding the ranks in rank order (the same sums as all_reduce_sum and
  // reduce_scatter_sum, so results are identical bit for bit).
  virtual void reduce_sum_async(const Tensor& buf, int root) = 0;
  // Brackets several asynchronous calls that may run together (NCCL: one ncclGroupStart/End, so reductions to
  // different roots are launched as one). Every rank must bracket the same calls. No-ops on the loopback.
  virtual void group_begin() {}
  virtual void group_end() {}
  // Waits until every reduction begun by all_reduce_sum_async / reduce_sum_async is complete (errors and dead peers are reported
  // here, within timeout_s()).
  virtual void wait_async() {}
  // acc = ((acc + contrib_0) + contrib_1) + ... + contrib_{world-1}, rank 0's acc as the start (f32). On the loopback
  // this is exactly the order of adding the ranks' contributions one after the other into one accumulator.
  virtual void accumulate_sum(const Tensor& acc, const Tensor& contrib) = 0;
  // in: (world * n) f32 on every rank; out: (n) = rank's chunk of the sum over ranks.
  virtual void reduce_scatter_sum(const Tensor& in, const Tensor& out) = 0;
  // in: n elements of any dtype; out: world * n of the same dtype, rank r's input at [r n, (r + 1) n).
  virtual void all_gather(const Tensor& in, const Tensor& out) = 0;
  // In place: every rank's buf = root's buf (any dtype).
  virtual void broadcast(const Tensor& buf, int root) = 0;
  virtual void barrier() = 0;

  // Host helpers built on the above.
  std::vector<uint64_t> all_gather_u64(uint64_t v);
  // Every rank passes the same number of doubles; returns all of them, rank 0's first. Moves bytes only, so the
  // values arrive exactly (evaluation sums them on the host in a fixed order, see train/evaluate.h).
  std::vector<double> all_gather_f64(const std::vector<double>& mine);
  double broadcast_f64(double v, int root);
  // Fails on every rank, naming the ranks that differ, when `hash` (e.g. of the resolved config) is not the same.
  void check_same(uint64_t hash, const std::string& what);
};

// The communicator `pgolf launch --loopback N` hands to the command running on the calling thread (null
// elsewhere): lets the unchanged `train` command run as one of N loopback ranks.
Communicator* thread_comm();
void set_thread_comm(Communicator* c);

// 64-bit FNV-1a of a string (config hashes; stable across builds and machines).
uint64_t fnv1a64(const std::string& s);

// The NCCL transport for `info` (rendezvous on info.master_addr:master_port, config hash checked there).
// Throws a clear error in builds without NCCL.
std::unique_ptr<Communicator> make_nccl_comm(const RankInfo& info, uint64_t config_hash, double timeout_s = 30);
bool nccl_available();

}  // namespace pgolf::dist
