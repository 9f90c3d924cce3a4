#pragma once
// Host + device pieces of the flash attention backward kernels (attention_bwd.cuh, attention_bwd_wgmma.cuh)
// that are plain index arithmetic, so tests/ops/test_wgmma_layout.cpp checks them on the CPU: the range
// of query blocks a key block must visit, and the shared-memory plan and staging maps of the wgmma kernel.
#include <cstdint>

#include "core/dtype.h"  // PG_HD

namespace pgolf::ops::cuda::attn {

// Query rows that can see at least one key of k0..k_last (k0 a multiple of q_rows) lie in the query
// blocks qb_begin .. q_end / q_rows (blocks of q_rows rows): from the causal diagonal (or 0 without a
// causal limit) to the end of the window and of the documents. doc_b: the batch row's doc_start (T
// entries) or nullptr; doc_start is non-decreasing along the row (ops/documents.h), so the queries that can
// see a key <= k_last end at the last i with doc_b[i] <= k_last (doc_b[k_last] <= k_last always). Without
// that bound a long packed row (document packing, §2.5) would load every later query tile just to skip it.
struct QueryBlocks {
  int qb_begin, q_end;
};
PG_HD QueryBlocks bwd_query_blocks(int k0, int k_last, int T, bool causal, int window, const int32_t* doc_b,
                                   int q_rows) {
  const int qb_begin = causal || window > 0 ? k0 / q_rows : 0;
  int q_end = T - 1;
  if (window > 0 && k_last + window - 1 < q_end) q_end = k_last + window - 1;
  if (doc_b && q_end > k_last) {
    int lo = k_last, hi = q_end;
    while (lo < hi) {
      const int mid = lo + (hi - lo + 1) / 2;
      if (doc_b[mid] <= k_last) lo = mid;
      else hi = mid - 1;
    }
    q_end = lo;
  }
  return QueryBlocks{qb_begin, q_end};
}

// ---- the wgmma backward kernel (attention_bwd_wgmma.cuh) ----
// A block is kWgs warpgroups (1 or 2); warpgroup w owns keys 64w..64w+63 of the block's 64 kWgs keys.
constexpr int kBwdWgQRows = 64;   // query rows per iteration
constexpr int kBwdDqStride = 72;  // floats per row of the fp32 dQ staging tiles (64 + 8: 2 wavefronts per
                                  // float2 store of a warp, conflict-free float4 reads)
constexpr int kBwdDqTileFloats = kBwdWgQRows * kBwdDqStride;

// Shared-memory plan (byte offsets from a 1024-byte-aligned base; every bf16 tile starts on a 1024-byte
// boundary, as the 128-byte swizzle needs). Tiles are 64-element (128-byte) swizzled rows.
template <int kWgs> struct BwdWgPlan {
  static_assert(kWgs == 1 || kWgs == 2, "one or two warpgroups");
  static constexpr int kKeys = 64 * kWgs, kThreads = 128 * kWgs;
  static constexpr int kOffK = 0;                                // K: kKeys rows
  static constexpr int kOffV = kOffK + kKeys * 128;              // V: kKeys rows
  static constexpr int kOffQ = kOffV + kKeys * 128;              // Q: 2 buffers x 64 queries
  static constexpr int kOffDo = kOffQ + 2 * kBwdWgQRows * 128;   // dO: 2 buffers x 64 queries
  static constexpr int kOffDs = kOffDo + 2 * kBwdWgQRows * 128;  // dS^T (bf16): per warpgroup 64 keys x 64 queries
  static constexpr int kOffDq = kOffDs + kKeys * 128;            // dQ partials (f32): [2 iterations][kWgs][64 x 72]
  static constexpr int kOffLse = kOffDq + 2 * kWgs * kBwdDqTileFloats * 4;  // lse: 2 buffers x 64 f32
  static constexpr int kOffDsum = kOffLse + 2 * kBwdWgQRows * 4;             // Dsum: 2 buffers x 64 f32
  static constexpr int kSmemBytes = 1024 + kOffDsum + 2 * kBwdWgQRows * 4;   // + alignment slack
  static constexpr int kReduceSteps = kBwdWgQRows * 64 / 4 / kThreads;      // float4s per thread per reduction
  static_assert(kOffQ % 1024 == 0 && kOffDo % 1024 == 0 && kOffDs % 1024 == 0 && kOffDq % 16 == 0,
                "wgmma tiles must start on 1024-byte boundaries");
  static_assert(kSmemBytes <= 227 * 1024, "over the sm_90 per-block shared memory limit");
};

// Per-query flags of the block's keys k0 .. k0 + 64 nwg - 1 for a query whose visible keys are [lo, hi] (empty
// if lo > hi): bit w (< nwg) = it sees at least one key (< T) of warpgroup w; bit 2 + w = it does not see all
// 64 keys of warpgroup w (masking needed; keys past T are never visible). The kernel ORs them over the 64
// queries of a query block.
PG_HD uint32_t bwd_query_flags(int lo, int hi, int k0, int T, int nwg) {
  uint32_t bits = 0;
  for (int w = 0; w < nwg; ++w) {
    const int kw = k0 + 64 * w, kw_last = kw + 63 < T - 1 ? kw + 63 : T - 1;
    if ((lo > kw ? lo : kw) <= (hi < kw_last ? hi : kw_last)) bits |= 1u << w;
    if (!(lo <= kw && hi >= kw + 63)) bits |= 4u << w;
  }
  return bits;
}

// Float index of dQ element (row, col) in a warpgroup's staging tile (each thread stores float2 pairs of
// its accumulator fragment there). The tile of iteration it, warpgroup w starts at float
// ((it % 2) kWgs + w) kBwdDqTileFloats.
PG_HD int bwd_dq_stage_index(int row, int col) { return row * kBwdDqStride + col; }
// The reduction pass: thread tid (< threads), step i (< 1024 / threads) sums the float4 of the staging tiles
// at (row, col..col+3) and adds it to the global dQ accumulators; a warp covers two full query rows.
PG_HD int bwd_dq_reduce_row(int tid, int i, int threads) { return (i * threads + tid) >> 4; }
PG_HD int bwd_dq_reduce_col(int tid, int i, int threads) { return ((i * threads + tid) & 15) * 4; }

}  // namespace pgolf::ops::cuda::attn
