// Loopback collectives, rank setup from the environment and the TCP rendezvous (all on the CPU).
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "dist/comm.h"
#include "dist/env.h"
#include "dist/loopback_comm.h"
#include "dist/rendezvous.h"
#include "test_util.h"

using pgolf::test::error_of;

using namespace pgolf;
using namespace pgolf::dist;

namespace {

const char* kVars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                       "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"};
struct CleanEnv {
  CleanEnv() { clear(); }
  ~CleanEnv() { clear(); }
  static void clear() {
    for (const char* v : kVars) ::unsetenv(v);
  }
};

int test_port(int offset) { return 20000 + static_cast<int>((::getpid() * 4) % 20000) + offset; }

Tensor filled(int64_t n, float v) {
  Tensor t = Tensor::empty(Shape{n}, DType::F32);
  auto* p = static_cast<float*>(t.data());
  for (int64_t i = 0; i < n; ++i) p[i] = v;
  return t;
}

}  // namespace

TEST(DistEnv, SingleTorchrunAndOpenMpi) {
  CleanEnv env;
  RankInfo single = rank_info_from_env();
  EXPECT_EQ(single.world, 1);
  EXPECT_EQ(single.source, "single");

  ::setenv("RANK", "3", 1);
  ::setenv("WORLD_SIZE", "8", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "node7", 1);
  ::setenv("MASTER_PORT", "29555", 1);
  RankInfo t = rank_info_from_env();
  EXPECT_EQ(t.rank, 3);
  EXPECT_EQ(t.world, 8);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.master_addr, "node7");
  EXPECT_EQ(t.master_port, 29555);
  EXPECT_EQ(t.source, "torchrun");

  CleanEnv::clear();
  ::setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
  RankInfo m = rank_info_from_env();
  EXPECT_EQ(m.rank, 2);
  EXPECT_EQ(m.world, 4);
  EXPECT_EQ(m.local_rank, 0);
  EXPECT_EQ(m.source, "openmpi");
  EXPECT_EQ(m.master_port, 29500);
}

TEST(DistEnv, BadValuesAreNamed) {
  CleanEnv env;
  ::setenv("RANK", "4", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  EXPECT_NE(error_of([] { rank_info_from_env(); }).find("outside [0, 4)"), std::string::npos);
  ::setenv("RANK", "x1", 1);
  EXPECT_NE(error_of([] { rank_info_from_env(); }).find("RANK=\"x1\""), std::string::npos);
  ::setenv("RANK", "1", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  EXPECT_NE(error_of([] { rank_info_from_env(); }).find("disagree"), std::string::npos);
  CleanEnv::clear();
  ::setenv("WORLD_SIZE", "2", 1);
  EXPECT_NE(error_of([] { rank_info_from_env(); }).find("incomplete"), std::string::npos);
}

TEST(DistLoopback, CollectivesSumInRankOrder) {
  // Values whose float sum depends on the order: 1e8 + 1 - 1e8 = 0 in f32 rank order (0, 1, 2), not 1.
  const float vals[3] = {1e8f, 1.f, -1e8f};
  run_loopback(3, [&](Communicator& c) {
    const int r = c.rank();
    Tensor buf = filled(4, vals[r]);
    c.all_reduce_sum(buf);
    for (float v : buf.to_float_vector()) EXPECT_EQ(v, (vals[0] + vals[1]) + vals[2]);

    Tensor acc = filled(2, 5.f);
    Tensor contrib = filled(2, static_cast<float>(r + 1));
    c.accumulate_sum(acc, contrib);
    for (float v : acc.to_float_vector()) EXPECT_EQ(v, 5.f + 1.f + 2.f + 3.f);

    Tensor in = filled(6, static_cast<float>(10 * r));
    Tensor out = Tensor::zeros(Shape{2}, DType::F32);
    c.reduce_scatter_sum(in, out);
    for (float v : out.to_float_vector()) EXPECT_EQ(v, 30.f);

    Tensor mine = filled(2, static_cast<float>(r));
    Tensor all = Tensor::zeros(Shape{6}, DType::F32);
    c.all_gather(mine, all);
    EXPECT_EQ(all.to_float_vector(), (std::vector<float>{0, 0, 1, 1, 2, 2}));

    EXPECT_EQ(c.broadcast_f64(r == 2 ? 0.125 : -1.0, 2), 0.125);
    Tensor avg = filled(1, static_cast<float>(r));
    c.all_reduce_avg(avg);
    EXPECT_EQ(avg.to_float_vector()[0], 1.f);
    c.barrier();
    c.check_same(42, "test hash");
  });
}

TEST(DistLoopback, MismatchedHashAndMissingRankFail) {
  const std::string hash_err = error_of([] {
    run_loopback(2, [](Communicator& c) { c.check_same(c.rank() == 0 ? 1 : 2, "resolved config"); });
  });
  EXPECT_NE(hash_err.find("ranks disagree on the resolved config"), std::string::npos) << hash_err;

  const auto t0 = std::chrono::steady_clock::now();
  const std::string missing = error_of([] {
    run_loopback(2, [](Communicator& c) {
      if (c.rank() == 0) c.barrier();  // rank 1 never arrives
    }, /*timeout_s=*/0.3);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(missing.find("rank(s) 1 that never arrived"), std::string::npos) << missing;
  EXPECT_LT(s, 5.0);

  // A rank that throws wakes the others at once instead of letting them wait for the timeout.
  const auto t1 = std::chrono::steady_clock::now();
  const std::string died = error_of([] {
    run_loopback(3, [](Communicator& c) {
      if (c.rank() == 1) PG_FAIL("rank one exploded");
      c.barrier();
    }, /*timeout_s=*/20);
  });
  EXPECT_NE(died.find("loopback rank 1 failed"), std::string::npos) << died;
  EXPECT_NE(died.find("rank one exploded"), std::string::npos) << died;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 5.0);
}

TEST(DistRendezvous, SharesPayloadAndRefusesMismatchedConfigs) {
  auto info = [](int rank, int world, int port) {
    RankInfo i;
    i.rank = rank;
    i.world = world;
    i.master_port = port;
    return i;
  };
  {
    const int port = test_port(0);
    std::string got1, got2, err;
    std::thread t1([&] { got1 = rendezvous(info(1, 3, port), 77, "", 5); });
    std::thread t2([&] { got2 = rendezvous(info(2, 3, port), 77, "", 5); });
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // clients retry until rank 0 listens
    EXPECT_EQ(rendezvous(info(0, 3, port), 77, "the-unique-id", 5), "the-unique-id");
    t1.join();
    t2.join();
    EXPECT_EQ(got1, "the-unique-id");
    EXPECT_EQ(got2, "the-unique-id");
  }
  {
    const int port = test_port(1);
    std::string client_err;
    std::thread t1([&] { client_err = error_of([&] { rendezvous(info(1, 2, port), 0xbad, "", 5); }); });
    const std::string root_err = error_of([&] { rendezvous(info(0, 2, port), 0x600d, "id", 5); });
    t1.join();
    EXPECT_NE(root_err.find("different configs"), std::string::npos) << root_err;
    EXPECT_NE(client_err.find("rank 0 refused"), std::string::npos) << client_err;
    EXPECT_NE(client_err.find("different configs"), std::string::npos) << client_err;
  }
}

TEST(DistRendezvous, MissingRanksTimeOut) {
  RankInfo root;
  root.world = 3;
  root.master_port = test_port(2);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { rendezvous(root, 1, "id", 0.4); });
  EXPECT_NE(err.find("rank(s) 1, 2 never arrived"), std::string::npos) << err;
  RankInfo lone;
  lone.rank = 1;
  lone.world = 2;
  lone.master_port = test_port(3);
  const std::string err2 = error_of([&] { rendezvous(lone, 1, "", 0.4); });
  EXPECT_NE(err2.find("could not reach rank 0"), std::string::npos) << err2;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}
