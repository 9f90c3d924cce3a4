// NCCL transport (compiled with PGOLF_NCCL, which CMake defines when libnccl is found). Collectives run on a
// dedicated stream after the default stream's work; each call waits for completion by polling, so a peer that
// died (NCCL would block forever) turns into an error after timeout_s, and the communicator is aborted.
#include "dist/comm.h"
#include "dist/rendezvous.h"

#include "core/error.h"

#if PGOLF_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "core/cuda_check.h"
#include "core/stream.h"
#endif

namespace pgolf::dist {

#if PGOLF_NCCL
namespace {

#define PG_NCCL_OK(expr)                                                                          \
  do {                                                                                               \
    const ncclResult_t pg_nccl_rc = (expr);                                                          \
    PG_CHECK(pg_nccl_rc == ncclSuccess || pg_nccl_rc == ncclInProgress, "NCCL: {} failed: {}", #expr, \
             ncclGetErrorString(pg_nccl_rc));                                                        \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    default: return ncclUint8;
  }
}

class NcclComm final : public Communicator {
 public:
  NcclComm(const RankInfo& info, double timeout_s) : info_(info), timeout_s_(timeout_s) {}
  ~NcclComm() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
    if (ready_) cudaEventDestroy(ready_);
  }

  void init(uint64_t config_hash) {
    ncclUniqueId id;
    std::string payload;
    if (info_.rank == 0) {
      PG_NCCL_OK(ncclGetUniqueId(&id));
      payload.assign(reinterpret_cast<const char*>(&id), sizeof id);
    }
    payload = rendezvous(info_, config_hash, payload, timeout_s_);
    PG_CHECK(payload.size() == sizeof id, "NCCL: rendezvous delivered {} bytes, expected a {}-byte unique id",
             payload.size(), sizeof id);
    std::memcpy(&id, payload.data(), sizeof id);
    PG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "nccl comm stream");
    PG_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "nccl comm event");
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;  // lets wait() poll and abort instead of hanging on a dead peer
    PG_NCCL_OK(ncclCommInitRankConfig(&comm_, info_.world, id, info_.rank, &cfg));
    wait_comm_ready("ncclCommInitRank");
  }

  int rank() const override { return info_.rank; }
  int world() const override { return info_.world; }
  std::string name() const override { return "nccl"; }
  double timeout_s() const override { return timeout_s_; }

  void all_reduce_sum(const Tensor& buf) override {
    check(buf, "all_reduce_sum", true);
    begin();
    PG_NCCL_OK(ncclAllReduce(buf.data(), buf.data(), static_cast<size_t>(buf.numel()), ncclFloat32, ncclSum, comm_,
                                stream_));
    finish("all_reduce_sum");
  }
  void all_reduce_sum_async(const Tensor& buf) override {
    check(buf, "all_reduce_sum_async", true);
    after_compute();
    PG_NCCL_OK(ncclAllReduce(buf.data(), buf.data(), static_cast<size_t>(buf.numel()), ncclFloat32, ncclSum, comm_,
                                stream_));
    async_pending_ = true;
  }
  void reduce_sum_async(const Tensor& buf, int root) override {
    check(buf, "reduce_sum_async", true);
    PG_CHECK(root >= 0 && root < world(), "nccl reduce_sum_async: root {} outside [0, {})", root, world());
    after_compute();
    PG_NCCL_OK(ncclReduce(buf.data(), buf.data(), static_cast<size_t>(buf.numel()), ncclFloat32, ncclSum, root, comm_,
                             stream_));
    async_pending_ = true;
  }
  void group_begin() override {
    PG_CHECK(!in_group_, "nccl group_begin: already in a group");
    after_compute();  // once for the whole group
    in_group_ = true;
    PG_NCCL_OK(ncclGroupStart());
  }
  void group_end() override {
    PG_CHECK(in_group_, "nccl group_end without group_begin");
    in_group_ = false;
    const ncclResult_t rc = ncclGroupEnd();
    PG_CHECK(rc == ncclSuccess || rc == ncclInProgress, "NCCL: ncclGroupEnd failed: {}", ncclGetErrorString(rc));
    // A nonblocking communicator may still be enqueueing the group: settle before the next NCCL call.
    if (rc == ncclInProgress) wait_comm_ready("ncclGroupEnd");
  }
  void wait_async() override {
    if (!async_pending_) return;
    async_pending_ = false;
    finish("asynchronous reduction");
  }
  void accumulate_sum(const Tensor& acc, const Tensor& contrib) override {
    check(acc, "accumulate_sum", true);
    check(contrib, "accumulate_sum", true);
    PG_CHECK(acc.numel() == contrib.numel(), "nccl accumulate_sum: {} vs {}", acc.desc(), contrib.desc());
    // NCCL fixes no summation order: sum the contributions, then add once (not bit-identical to the loopback).
    Tensor tmp = contrib.to(Device::CUDA);
    all_reduce_sum(tmp);
    PG_CUDA_CHECK(cudaDeviceSynchronize(), "nccl accumulate_sum");
    Tensor host_acc = acc.to(Device::CPU), host_tmp = tmp.to(Device::CPU);
    auto* a = static_cast<float*>(host_acc.data());
    const auto* t = static_cast<const float*>(host_tmp.data());
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += t[i];
    acc.copy_from(host_acc);
  }
  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    check(in, "reduce_scatter_sum", true);
    check(out, "reduce_scatter_sum", true);
    PG_CHECK(in.numel() == out.numel() * world(), "nccl reduce_scatter_sum: in {} must be world x out {}", in.desc(),
             out.desc());
    begin();
    PG_NCCL_OK(ncclReduceScatter(in.data(), out.data(), static_cast<size_t>(out.numel()), ncclFloat32, ncclSum,
                                    comm_, stream_));
    finish("reduce_scatter_sum");
  }
  void all_gather(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather", false);
    check(out, "all_gather", false);
    PG_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * world(),
             "nccl all_gather: out {} must be world x in {}", out.desc(), in.desc());
    begin();
    PG_NCCL_OK(ncclAllGather(in.data(), out.data(), in.nbytes(), ncclUint8, comm_, stream_));
    finish("all_gather");
  }
  void broadcast(const Tensor& buf, int root) override {
    check(buf, "broadcast", false);
    begin();
    PG_NCCL_OK(ncclBroadcast(buf.data(), buf.data(), buf.nbytes(), ncclUint8, root, comm_, stream_));
    finish("broadcast");
  }
  void barrier() override {
    Tensor one = Tensor::zeros(Shape{1}, DType::F32, Device::CUDA);
    all_reduce_sum(one);
  }

 private:
  void check(const Tensor& t, const char* op, bool f32) const {
    PG_CHECK(t.defined() && t.device() == Device::CUDA, "nccl {}: {} must be a CUDA tensor", op, t.desc());
    PG_CHECK(!f32 || t.dtype() == DType::F32, "nccl {}: {} must be f32", op, t.desc());
  }
  // Asynchronous collectives: the comm stream waits on the compute stream's work so far (an event, no host wait).
  // Inside a group, group_begin did it for every call of the group.
  void after_compute() {
    if (in_group_) return;
    PG_CUDA_CHECK(cudaEventRecord(ready_, static_cast<cudaStream_t>(current_stream())), "nccl async: event record");
    PG_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0), "nccl async: stream wait");
  }
  // Collectives read what the default stream wrote: order the comm stream after it.
  void begin() { PG_CUDA_CHECK(cudaStreamSynchronize(nullptr), "nccl collective: default stream"); }
  void finish(const char* op) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    while (true) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      PG_CHECK(q == cudaErrorNotReady, "nccl {}: CUDA error {}", op, cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) fail(op, ncclGetErrorString(async));
      if (std::chrono::steady_clock::now() > deadline)
        fail(op, fmt::format("no completion within {:.0f} s (a rank died or stopped calling collectives)", timeout_s_));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  void wait_comm_ready(const char* op) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    while (true) {
      ncclResult_t st = ncclInProgress;
      ncclCommGetAsyncError(comm_, &st);
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail(op, ncclGetErrorString(st));
      if (std::chrono::steady_clock::now() > deadline) fail(op, fmt::format("not done within {:.0f} s", timeout_s_));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  [[noreturn]] void fail(const char* op, const std::string& why) {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    PG_FAIL("nccl rank {} of {}: {} failed: {}", info_.rank, info_.world, op, why);
  }

  RankInfo info_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // the compute stream's point an asynchronous reduction starts after
  bool async_pending_ = false;
  bool in_group_ = false;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_comm(const RankInfo& info, uint64_t config_hash, double timeout_s) {
  PG_CUDA_CHECK(cudaSetDevice(info.local_rank), "nccl: cudaSetDevice(LOCAL_RANK)");
  auto c = std::make_unique<NcclComm>(info, timeout_s);
  c->init(config_hash);
  return c;
}

#else

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_comm(const RankInfo& info, uint64_t, double) {
  PG_FAIL("rank {} of {}: this build has no NCCL (configure with CUDA and libnccl installed) so it cannot run "
          "several GPU ranks", info.rank, info.world);
}

#endif

}  // namespace pgolf::dist
