// CPU checks of the wgmma index maps (src/ops/wgmma_layout.h) and of the wgmma attention backward's
// layout plan (src/ops/attention_bwd_layout.h): fragment ownership, the accumulator -> A-fragment identity,
// the 128-byte swizzle, descriptor encoding, and -- under wgmma_layout.h's model of how the hardware reads a
// descriptor -- that every shared-memory operand the kernels feed reads the intended matrix element. The
// model itself is checked against the operands of the forward kernel, which runs correctly on the GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "ops/attention_bwd_layout.h"
#include "ops/wgmma_layout.h"

using namespace pgolf::ops::cuda;

namespace {

constexpr int kThreads = 128;  // one warpgroup

// Encodes a (row, col) pair of a 64 x 64 matrix (plus one so that 0 means "never written").
uint16_t tag(int row, int col) { return static_cast<uint16_t>(1 + row * 64 + col); }

// A shared-memory image of `bytes` bytes, as 16-bit cells, starting at shared address `base`.
struct Smem {
  uint32_t base;
  std::vector<uint16_t> cells;
  Smem(uint32_t b, uint32_t bytes) : base(b), cells(bytes / 2, 0) {}
  uint16_t dummy = 0xFFFF;  // what an address outside the image reads (never a valid tag)
  uint16_t& at(uint32_t addr) {
    const bool inside = addr >= base && addr < base + 2 * cells.size() && addr % 2 == 0;
    EXPECT_TRUE(inside) << "shared address " << addr << " outside the image";
    return inside ? cells[(addr - base) / 2] : dummy;
  }
};

// A 64-element-wide swizzled tile of `rows` rows at `tile`, holding tag(row, col) as a loader puts it there.
void fill_tile(Smem& m, uint32_t tile, int rows, int row_tag_offset) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < 64; ++c) m.at(tile + wgmma::sw128_byte(r, c)) = tag(r + row_tag_offset, c);
}

}  // namespace

TEST(WgmmaLayout, AccumulatorElementsHaveExactlyOneOwner) {
  for (int n : {64, 128}) {
    std::vector<int> seen(64 * n, 0);
    for (int t = 0; t < kThreads; ++t)
      for (int r = 0; r < n / 2; ++r) {
        const int row = wgmma::acc_row(t, r), col = wgmma::acc_col(t, r);
        ASSERT_TRUE(row >= 0 && row < 64 && col >= 0 && col < n) << t << " " << r;
        ++seen[row * n + col];
      }
    for (int i = 0; i < 64 * n; ++i) ASSERT_EQ(seen[i], 1) << "N=" << n << " element " << i;
  }
  // Spot values of the documented map (the mma.sync m16n8 C fragment per warp): thread 37 = warp 1, g 1, q 1.
  EXPECT_EQ(wgmma::acc_row(37, 0), 17);
  EXPECT_EQ(wgmma::acc_col(37, 0), 2);
  EXPECT_EQ(wgmma::acc_row(37, 6), 25);
  EXPECT_EQ(wgmma::acc_col(37, 7), 11);
}

TEST(WgmmaLayout, AccumulatorColumnsPackedAreTheAFragment) {
  std::vector<int> seen(64 * 16, 0);
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        const int row = wgmma::afrag_row(t, i, h), col = wgmma::afrag_col(t, i, h);
        ASSERT_TRUE(row >= 0 && row < 64 && col >= 0 && col < 16);
        ++seen[row * 16 + col];
        for (int kk = 0; kk < 4; ++kk) {
          const int r = wgmma::afrag_acc_reg(kk, i, h);
          EXPECT_EQ(wgmma::acc_row(t, r), row);
          EXPECT_EQ(wgmma::acc_col(t, r), 16 * kk + col);
        }
      }
  for (int i = 0; i < 64 * 16; ++i) ASSERT_EQ(seen[i], 1) << i;
  // The kernels pack accumulator registers 4j + 2x + {0, 1} into A register (j % 2) * 2 + x of k-step j / 2.
  for (int j = 0; j < 8; ++j)
    for (int x = 0; x < 2; ++x)
      for (int h = 0; h < 2; ++h) EXPECT_EQ(wgmma::afrag_acc_reg(j / 2, (j % 2) * 2 + x, h), 4 * j + 2 * x + h);
}

TEST(WgmmaLayout, Sw128IsAPermutationOfEachAtom) {
  for (int atom = 0; atom < 16; ++atom) {
    std::set<uint32_t> offs;
    for (int r = 8 * atom; r < 8 * atom + 8; ++r)
      for (int c = 0; c < 64; ++c) {
        const uint32_t o = wgmma::sw128_byte(r, c);
        ASSERT_EQ(o % 2, 0u);
        ASSERT_GE(o, 1024u * atom);
        ASSERT_LT(o, 1024u * atom + 1024);
        // attn::swz (attention_mma.cuh) in bytes: the layout the loaders and ldmatrix readers use.
        ASSERT_EQ(o, 2u * (r * 64 + ((((c >> 3) ^ r) & 7) << 3) + (c & 7)));
        offs.insert(o);
      }
    EXPECT_EQ(offs.size(), 512u);
  }
  // Pairs (c, c + 1) with c even stay adjacent: the kernels store bf16 pairs as one 32-bit word.
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 64; c += 2) EXPECT_EQ(wgmma::sw128_byte(r, c + 1), wgmma::sw128_byte(r, c) + 2);
}

TEST(WgmmaLayout, DescriptorFieldsRoundTrip) {
  for (uint32_t addr : {0u, 1024u, 9216u, 65536u + 32u, 200704u + 2048u + 96u}) {
    const wgmma::DescFields k = wgmma::desc_decode(wgmma::desc_k_major(addr));
    EXPECT_EQ(k.start, addr);
    EXPECT_EQ(k.stride, 1024u);
    EXPECT_EQ(k.base_offset, 0);
    EXPECT_EQ(k.swizzle, 1);
    const wgmma::DescFields m = wgmma::desc_decode(wgmma::desc_mn_major(addr));
    EXPECT_EQ(m.start, addr);
    EXPECT_EQ(m.lead, 1024u);
    EXPECT_EQ(m.stride, 1024u);
    EXPECT_EQ(m.swizzle, 1);
  }
  // The field positions of the PTX matrix descriptor.
  EXPECT_EQ(wgmma::make_desc_sw128(0x12340, 0x560, 0x780), (uint64_t{1} << 62) | (uint64_t{0x78} << 32) |
                                                               (uint64_t{0x56} << 16) | uint64_t{0x1234});
}

// The model against the forward kernel (attention_fwd_wgmma.cuh), which is correct on the GPU: S = Q K^T with
// Q (warpgroup wg's 64 rows of a 128-row tile) and K both K-major, O += P V with V MN-major.
TEST(WgmmaLayout, ModelReadsTheForwardKernelsOperands) {
  const uint32_t q_tile = 3 * 1024 * 16, k_tile = q_tile + 128 * 128, v_tile = k_tile + 128 * 128;
  Smem m(q_tile, 3 * 128 * 128);
  fill_tile(m, q_tile, 128, 0);
  fill_tile(m, k_tile, 128, 0);
  fill_tile(m, v_tile, 128, 0);
  for (int wg = 0; wg < 2; ++wg)
    for (int kk = 0; kk < 4; ++kk)
      for (int mn = 0; mn < 64; ++mn)
        for (int k = 0; k < 16; ++k) {
          const uint32_t qa = q_tile + wg * 64 * 128 + kk * 32;  // the forward's q_addr + kk * 32
          ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major(qa), false, mn, k)),
                    tag(64 * wg + mn, 16 * kk + k));
        }
  for (int kk = 0; kk < 8; ++kk)  // 128 keys: S (64 x 128) B operand rows mn < 128, V k-steps of 16 keys
    for (int mn = 0; mn < 128; ++mn)
      for (int k = 0; k < 16; ++k) {
        if (kk < 4) {
          ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major(k_tile + kk * 32), false, mn, k)),
                    tag(mn, 16 * kk + k));
        }
        if (mn < 64) {
          ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_mn_major(v_tile + kk * 16 * 128), true, mn, k)),
                    tag(16 * kk + k, mn));
        }
      }
}

// Every shared-memory operand of the backward kernel (attention_bwd_wgmma.cuh), through the same descriptor
// helpers and shared-memory plan it uses, for a block of kWgs warpgroups.
template <int kWgs> void check_backward_operands() {
  using P = pgolf::ops::cuda::attn::BwdWgPlan<kWgs>;
  constexpr int kQRows = pgolf::ops::cuda::attn::kBwdWgQRows;
  const uint32_t base = 1024 * 5;  // any 1024-aligned shared address
  Smem m(base, P::kOffDq);          // the bf16 tiles: K, V, Q x 2, dO x 2, dS^T per warpgroup
  fill_tile(m, base + P::kOffK, P::kKeys, 0);
  fill_tile(m, base + P::kOffV, P::kKeys, 0);
  fill_tile(m, base + P::kOffQ, 128, 0);  // both buffers: rows 64.. are buffer 1
  fill_tile(m, base + P::kOffDo, 128, 0);

  for (int wg = 0; wg < kWgs; ++wg) {
    const uint32_t k_w = base + P::kOffK + wg * 64 * 128, v_w = base + P::kOffV + wg * 64 * 128;
    for (int buf = 0; buf < 2; ++buf) {
      const uint32_t q = base + P::kOffQ + buf * kQRows * 128, dO = base + P::kOffDo + buf * kQRows * 128;
      for (int kk = 0; kk < 4; ++kk)
        for (int mn = 0; mn < 64; ++mn)
          for (int k = 0; k < 16; ++k) {
            // S^T = K_w Q^T and dP^T = V_w dO^T: A (keys x head dims) and B (queries x head dims), K-major.
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major_kstep(k_w, kk), false, mn, k)),
                      tag(64 * wg + mn, 16 * kk + k));
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major_kstep(v_w, kk), false, mn, k)),
                      tag(64 * wg + mn, 16 * kk + k));
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major_kstep(q, kk), false, mn, k)),
                      tag(64 * buf + mn, 16 * kk + k));
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_k_major_kstep(dO, kk), false, mn, k)),
                      tag(64 * buf + mn, 16 * kk + k));
            // dV += P^T dO, dK += dS^T Q: B = dO / Q (queries = contraction, head dims = N), MN-major.
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_mn_major_kstep(dO, kk), true, mn, k)),
                      tag(64 * buf + 16 * kk + k, mn));
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_mn_major_kstep(q, kk), true, mn, k)),
                      tag(64 * buf + 16 * kk + k, mn));
            // dQ_w = dS_w K_w: B = K_w (keys = contraction, head dims = N), MN-major.
            ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_mn_major_kstep(k_w, kk), true, mn, k)),
                      tag(64 * wg + 16 * kk + k, mn));
          }
    }
  }
}
TEST(WgmmaLayout, BackwardOperandsReadTheIntendedElements) {
  check_backward_operands<1>();
  check_backward_operands<2>();
}

// dS^T as the kernel stores it from the accumulator fragment (rows = keys, columns = queries, bf16 pairs at
// sw128_byte(row, col)), read back as dQ's MN-major A operand (M = queries, K = keys), is the matrix dS.
TEST(WgmmaLayout, StoredDsTransposeReadsBackAsDs) {
  using P = pgolf::ops::cuda::attn::BwdWgPlan<2>;
  const uint32_t base = 1024 * 7;
  Smem m(base, P::kOffDq);
  for (int wg = 0; wg < 2; ++wg) {
    const uint32_t ds_w = base + P::kOffDs + wg * 64 * 128;
    for (int t = 0; t < kThreads; ++t) {
      const int r0 = wgmma::acc_row(t, 0);
      for (int j = 0; j < 8; ++j) {
        const int qc = wgmma::acc_col(t, 4 * j);
        // The kernel's two 32-bit stores: registers (4j, 4j+1) at (r0, qc), (4j+2, 4j+3) at (r0 + 8, qc).
        for (int e = 0; e < 4; ++e) {
          const int r = 4 * j + e, row = e < 2 ? r0 : r0 + 8;
          ASSERT_EQ(wgmma::acc_row(t, r), row);
          ASSERT_EQ(wgmma::acc_col(t, r), qc + (e & 1));
          uint16_t& cell = m.at(ds_w + wgmma::sw128_byte(row, qc) + 2 * (e & 1));
          ASSERT_EQ(cell, 0) << "written twice";
          cell = tag(wgmma::acc_row(t, r), wgmma::acc_col(t, r));  // dS^T[key][query]
        }
      }
    }
    for (int kk = 0; kk < 4; ++kk)
      for (int mq = 0; mq < 64; ++mq)
        for (int k = 0; k < 16; ++k)  // A element (query mq, key 16kk + k) = dS^T[16kk + k][mq]
          ASSERT_EQ(m.at(wgmma::sw128_operand_addr(wgmma::desc_mn_major_kstep(ds_w, kk), true, mq, k)),
                    tag(16 * kk + k, mq));
  }
}

template <int kWgs> void check_dq_staging() {
  using namespace pgolf::ops::cuda::attn;
  using P = BwdWgPlan<kWgs>;
  std::vector<int> staged(kBwdDqTileFloats, -1);
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < 32; ++r) {
      const int row = wgmma::acc_row(t, r), col = wgmma::acc_col(t, r);
      const int idx = bwd_dq_stage_index(row, col);
      if (r % 2 == 0) {
        ASSERT_EQ(idx % 2, 0) << "float2 store misaligned";
      }
      ASSERT_LT(idx, kBwdDqTileFloats);
      ASSERT_EQ(staged[idx], -1);
      staged[idx] = row * 64 + col;
    }
  std::vector<int> reduced(64 * 64, 0);
  for (int tid = 0; tid < P::kThreads; ++tid)
    for (int i = 0; i < P::kReduceSteps; ++i) {
      const int row = bwd_dq_reduce_row(tid, i, P::kThreads), col = bwd_dq_reduce_col(tid, i, P::kThreads);
      ASSERT_TRUE(row < 64 && col % 4 == 0 && col < 64);
      const int idx = bwd_dq_stage_index(row, col);
      ASSERT_EQ(idx % 4, 0) << "float4 read misaligned";
      for (int c = 0; c < 4; ++c) {
        ASSERT_EQ(staged[idx + c], row * 64 + col + c);
        ++reduced[row * 64 + col + c];
      }
      // A warp's 32 float4 reads cover two whole query rows (one 256-byte global row each).
      if (tid % 32 == 0) {
        EXPECT_EQ(bwd_dq_reduce_row(tid + 31, i, P::kThreads), row + 1);
      }
    }
  for (int i = 0; i < 64 * 64; ++i) ASSERT_EQ(reduced[i], 1) << i;
}
TEST(WgmmaLayout, DqStagingAndReductionCoverTheTileOnce) {
  check_dq_staging<1>();
  check_dq_staging<2>();
}

template <int kWgs> void check_plan() {
  using namespace pgolf::ops::cuda::attn;
  using P = BwdWgPlan<kWgs>;
  const int regions[][2] = {{P::kOffK, P::kKeys * 128},
                            {P::kOffV, P::kKeys * 128},
                            {P::kOffQ, 2 * kBwdWgQRows * 128},
                            {P::kOffDo, 2 * kBwdWgQRows * 128},
                            {P::kOffDs, P::kKeys * 128},
                            {P::kOffDq, 2 * kWgs * kBwdDqTileFloats * 4},
                            {P::kOffLse, 2 * kBwdWgQRows * 4},
                            {P::kOffDsum, 2 * kBwdWgQRows * 4}};
  int end = 0;
  for (const auto& r : regions) {
    EXPECT_EQ(r[0], end) << "regions must be packed in order";
    end = r[0] + r[1];
  }
  EXPECT_EQ(P::kSmemBytes, 1024 + end);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(regions[i][0] % 1024, 0);
  EXPECT_EQ(P::kReduceSteps * P::kThreads * 4, 64 * 64);
}
TEST(WgmmaLayout, BackwardSharedMemoryPlanDoesNotOverlap) {
  check_plan<1>();
  check_plan<2>();
  // Two blocks of one warpgroup fit an SM (228 KiB, 1 KiB of it reserved per block).
  EXPECT_LE(2 * (pgolf::ops::cuda::attn::BwdWgPlan<1>::kSmemBytes + 2048), 228 * 1024);
}

// bwd_query_blocks (both backward kernels): every query that sees a key of [k0, k_last] lies in the query
// blocks it returns; with causal documents and no window, q_end is exactly the last such query.
TEST(WgmmaLayout, QueryBlocksCoverEveryQueryThatSeesTheKeys) {
  using namespace pgolf::ops::cuda::attn;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int T = 1 + static_cast<int>(rng() % 400);
    const bool causal = rng() % 4 != 0, docs = rng() % 2 == 0;
    const int window = rng() % 3 == 0 ? 1 + static_cast<int>(rng() % 150) : 0;
    std::vector<int32_t> doc(T);
    for (int t = 0, start = 0; t < T; ++t) {
      if (t > 0 && rng() % 40 == 0) start = t;
      doc[t] = start;
    }
    auto sees = [&](int i, int j) {
      if (causal && j > i) return false;
      if (window > 0 && !(i - window < j && j <= i)) return false;
      return !docs || j >= doc[i];
    };
    for (int keys : {64, 128}) {
      for (int k0 = 0; k0 < T; k0 += keys) {
        const int k_last = std::min(k0 + keys, T) - 1;
        const QueryBlocks qb = bwd_query_blocks(k0, k_last, T, causal, window, docs ? doc.data() : nullptr, 64);
        ASSERT_GE(qb.q_end, qb.qb_begin * 64) << "no query block at all";
        int last = -1;
        for (int i = 0; i < T; ++i)
          for (int j = k0; j <= k_last; ++j)
            if (sees(i, j)) {
              ASSERT_GE(i, qb.qb_begin * 64) << "T " << T << " k0 " << k0;
              ASSERT_LE(i, qb.q_end) << "T " << T << " k0 " << k0 << " window " << window;
              last = i;
              break;
            }
        if (docs && causal && window == 0) {
          EXPECT_EQ(qb.q_end, last);
        }
      }
    }
  }
}

// bwd_query_flags against brute force over the block's 128 keys, for every kind of visible range.
TEST(WgmmaLayout, QueryFlagsSayWhichWarpgroupsSeeKeysAndWhichNeedMasks) {
  using namespace pgolf::ops::cuda::attn;
  std::mt19937 rng(11);
  for (int trial = 0; trial < 20000; ++trial) {
    const int nwg = 1 + trial % 2, keys = 64 * nwg;
    const int T = 1 + static_cast<int>(rng() % 400), k0 = keys * static_cast<int>(rng() % ((T + keys - 1) / keys));
    int lo = static_cast<int>(rng() % (T + 1)), hi = static_cast<int>(rng() % T);
    if (trial % 7 == 0) lo = 1, hi = 0;  // a query row past T (or with nothing visible)
    const uint32_t f = bwd_query_flags(lo, hi, k0, T, nwg);
    ASSERT_EQ(f & ~((1u << nwg) - 1) & 3u, 0u) << "a flag for a warpgroup the block does not have";
    for (int w = 0; w < nwg; ++w) {
      bool any = false, all = true;
      for (int j = k0 + 64 * w; j < k0 + 64 * w + 64; ++j) {
        const bool vis = j < T && lo <= j && j <= hi;
        any = any || vis;
        all = all && vis;
      }
      ASSERT_EQ(((f >> w) & 1u) != 0, any) << "T " << T << " k0 " << k0 << " [" << lo << ", " << hi << "] w " << w;
      ASSERT_EQ(((f >> (2 + w)) & 1u) != 0, !all) << "T " << T << " k0 " << k0 << " [" << lo << ", " << hi << "]";
    }
  }
}
