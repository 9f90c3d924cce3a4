#pragma once
// Flash attention backward v2 (bf16, head_dim 64, mma.sync): the v1 algorithm (attention_bwd.cuh: same
// transposed orientation, same per-warp products over 16 keys x 64 queries, same prep and dq kernels) with
// a key block of 16 * NW keys and NW warps per block. What changes, and why:
//   - NW = 8 (128 keys): each 64-query Q/dO tile loaded into shared memory feeds twice the tensor-core work,
//     and each dQ element gets one atomic per 128 keys instead of per 64.
//   - dQ atomics are red.global.add.v4.f32 (float4 atomicAdd, sm_90): one lane pair swaps halves so that
//     each lane holds 4 consecutive columns of one row; 4x fewer atomic instructions than v1's float2 per 64.
//   - dQ = dS K is split over the warps by (16-query tile, d range) with k running over all the block's keys;
//     NW = 8 uses two accumulator sets so the 8-long k chain has independent MMAs in flight.
//   - K and V fragments are read from shared memory where used instead of living in 32 registers.
//   - Two barriers per iteration instead of four: whether a (query tile, key block) pair needs the
//     per-element mask is decided from the tile's first and last rows (lo and hi of a row's visible key
//     range are non-decreasing in the row, doc_start included), and every (query tile) in the block's range
//     sees some key of the block (the range ends at the last query that sees one; see the bounds below), so
//     v1's __syncthreads_or / __syncthreads_and go away. The top barrier of iteration it+1 also orders the
//     dQ reads of dS^T in iteration it before its rewrite.
// NW = 4 (64 keys) is the same kernel at v1's block size, with at most 168 registers for 3 blocks per SM.
#include <cstdint>

#include "ops/attention_bwd.cuh"
#include "ops/attention_mma.cuh"

namespace pgolf::ops::cuda::attn {

// Dynamic shared memory: K, V (16 NW rows each), two buffers of Q and dO (64 rows each), dS^T (16 NW rows),
// two buffers of the query rows' lse and Dsum. 82,944 bytes for NW = 8; 58,368 for NW = 4.
template <int NW>
constexpr int bwd2_smem_bytes() {
  return (3 * 16 * NW * kTile + 4 * kTile * kTile) * 2 + 2 * 2 * kTile * 4;
}

// Loads kRows x 64 bf16 rows (row r at base + r * row_stride, rows >= valid zero-filled; valid may be <= 0)
// into swizzled shared memory. Unused rows read row 0, which is in bounds whenever valid > 0; when valid <= 0
// no byte is read (src-size 0), but the address then still points at base.
template <int kThreads, int kRows>
__device__ __forceinline__ void load_rows_async(uint16_t* smem, const uint16_t* base, int64_t row_stride, int valid,
                                                int tid) {
  static_assert((kRows * 8) % kThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int i = 0; i < kRows * 8 / kThreads; ++i) {
    const int chunk = tid + i * kThreads, row = chunk >> 3, c = chunk & 7;
    const bool ok = row < valid;
    cp_async16(smem_addr(smem + swz(row, c * 8)), base + (ok ? row : 0) * row_stride + c * 8, ok ? 16 : 0);
  }
}

template <int NW>
__global__ void __launch_bounds__(32 * NW, NW == 8 ? 1 : 3) flash_bwd2_kernel(BwdArgs a) {
  static_assert(NW == 4 || NW == 8, "dQ split assumes 4 query tiles x NW/4 d ranges");
  constexpr int kThreads = 32 * NW, kKeys = 16 * NW;
  extern __shared__ __align__(128) unsigned char bwd2_smem[];
  uint16_t* sK = reinterpret_cast<uint16_t*>(bwd2_smem);
  uint16_t* sV = sK + kKeys * kTile;
  uint16_t* sQbuf = sV + kKeys * kTile;          // [2][64 x 64]
  uint16_t* sdObuf = sQbuf + 2 * kTile * kTile;  // [2][64 x 64]
  uint16_t* sdS = sdObuf + 2 * kTile * kTile;    // dS^T: rows = the block's keys, cols = queries
  float* s_lse_buf = reinterpret_cast<float*>(sdS + kKeys * kTile);  // [2][64] raw lse of the tile's rows
  float* s_dsum_buf = s_lse_buf + 2 * kTile;                          // [2][64]
  __shared__ int s_lo[kTile], s_hi[kTile];  // visible key range per query row, only for masked tiles

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, qd = lane & 3;
  const int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int T = a.T, group = a.Hq / a.Hkv;
  const int k0 = kb * kKeys, k_last = min(k0 + kKeys, T) - 1;
  const int64_t q_stride = static_cast<int64_t>(a.Hq) * kTile, kv_stride = static_cast<int64_t>(a.Hkv) * kTile;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * T : nullptr;
  constexpr float kLog2e = 1.4426950408889634f;

  const int64_t kv_off = ((static_cast<int64_t>(b) * T + k0) * a.Hkv + hk) * kTile;
  load_rows_async<kThreads, kKeys>(sK, a.k + kv_off, kv_stride, T - k0, tid);
  load_rows_async<kThreads, kKeys>(sV, a.v + kv_off, kv_stride, T - k0, tid);
  // (committed together with the first Q/dO tiles below)

  // Query tiles that can see keys k0..k_last, as in v1: from the causal diagonal to the last query q_end whose
  // window / document still reaches k_last. Each tile in this range has a row that sees some key of the block
  // (q_end sees k_last, and lo(i) <= lo(q_end) for earlier rows), so v1's skip test is dropped; a tile that saw
  // none would still be correct, only wasted work, because it is masked (needs_mask below).
  const bool hi_is_row = a.causal || a.window > 0;  // hi(i) = i, else T - 1
  const int qb_begin = hi_is_row ? k0 / kTile : 0;
  int q_end = T - 1;
  if (a.window > 0) q_end = min(q_end, k_last + a.window - 1);
  if (doc_b && q_end > k_last) {  // last i with doc_b[i] <= k_last (doc_b[k_last] <= k_last always)
    int lo = k_last, hi = q_end;
    while (lo < hi) {
      const int mid = lo + (hi - lo + 1) / 2;
      if (doc_b[mid] <= k_last) lo = mid;
      else hi = mid - 1;
    }
    q_end = lo;
  }
  const int n_qb = q_end / kTile - qb_begin + 1, n_it = group * n_qb;
  const int key_row0 = k0 + warp * 16 + g, key_row1 = key_row0 + 8;  // this lane's two key rows
  const bool rows_aligned = (T & 3) == 0;

  auto issue = [&](int it, int buf) {
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kTile;
    const int64_t head_off = (static_cast<int64_t>(b) * T * a.Hq + hq) * kTile + q0 * q_stride;
    load_tile_async<kThreads>(sQbuf + buf * kTile * kTile, a.q + head_off, q_stride, T - q0, tid);
    load_tile_async<kThreads>(sdObuf + buf * kTile * kTile, a.dout + head_off, q_stride, T - q0, tid);
    const int64_t row_off = (static_cast<int64_t>(b) * a.Hq + hq) * T + q0;
    if (tid < 16)
      load_row64_async(s_lse_buf + buf * kTile, a.lse + row_off, T - q0, tid, rows_aligned);
    else if (tid < 32)
      load_row64_async(s_dsum_buf + buf * kTile, a.dsum + row_off, T - q0, tid - 16, rows_aligned);
  };
  // True unless every row q0..q0+63 exists and sees every key k0..k0+kKeys-1. lo(i) and hi(i) are
  // non-decreasing in i, so the last row has the largest lo and the first row the smallest hi.
  auto needs_mask = [&](int q0) {
    const int q_last = q0 + kTile - 1;
    if (q_last >= T) return true;
    int lo = a.window > 0 ? q_last - a.window + 1 : 0;
    if (doc_b) lo = max(lo, static_cast<int>(doc_b[q_last]));
    const int hi = hi_is_row ? q0 : T - 1;
    return lo > k0 || hi < k0 + kKeys - 1;
  };

  float dk[8][4], dv[8][4];  // (16 keys, 64 d) of this warp: d-tile j = columns 8j..8j+7
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.f;

  issue(0, 0);
  cp_async_commit();  // group 0: K, V and the first Q/dO/lse/Dsum tiles

  for (int it = 0; it < n_it; ++it) {
    const int buf = it & 1;
    if (it + 1 < n_it) issue(it + 1, buf ^ 1);
    cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group in flight
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kTile;
    const uint16_t* sQ = sQbuf + buf * kTile * kTile;
    const uint16_t* sdO = sdObuf + buf * kTile * kTile;
    const float* s_lse = s_lse_buf + buf * kTile;
    const float* s_dsum = s_dsum_buf + buf * kTile;
    const bool need_mask = needs_mask(q0);  // uniform over the block
    // The tables are read only before the middle barrier, which every warp has passed when any warp gets here.
    if (need_mask && tid < kTile) {
      const RowRange r = row_range(q0 + tid, T, a.causal, a.window, doc_b);
      s_lo[tid] = r.lo, s_hi[tid] = r.hi;
    }
    cp_async_wait<1>();  // this iteration's tiles (the next one's may still be in flight)
    __syncthreads();     // tiles and tables visible; every warp is done with the previous iteration's dQ (sdS)

    // S^T = K Q^T (16 keys x 64 queries per warp), then P^T in place (fp32).
    float p[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) p[j][0] = p[j][1] = p[j][2] = p[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t kf[4];  // A = K (keys x d), d step kk
      {
        const int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(kf, smem_addr(sK + swz(row, col)));
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        const int row = np * 16 + (lane & 7) + (lane >> 4) * 8, col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(r, smem_addr(sQ + swz(row, col)));
        mma_bf16(p[2 * np], kf, r[0], r[1]);
        mma_bf16(p[2 * np + 1], kf, r[2], r[3]);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 lse2 = *reinterpret_cast<const float2*>(s_lse + j * 8 + 2 * qd);  // query columns 2qd, 2qd+1
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int qc = j * 8 + 2 * qd + e;  // query column within the tile
        const float l2 = (e == 0 ? lse2.x : lse2.y) * kLog2e;
        float v0 = fast_exp2(fmaf(p[j][e], a.scale_log2, -l2));
        float v1 = fast_exp2(fmaf(p[j][2 + e], a.scale_log2, -l2));
        if (need_mask) {
          const int lo = s_lo[qc], hi = s_hi[qc];
          if (key_row0 < lo || key_row0 > hi) v0 = 0.f;
          if (key_row1 < lo || key_row1 > hi) v1 = 0.f;
        }
        p[j][e] = v0, p[j][2 + e] = v1;
      }
    }

    // dV += P^T dO (k over queries) ; dP^T = V dO^T (k over d).
    float dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                              pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                              pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
      for (int dpair = 0; dpair < 4; ++dpair) {
        uint32_t r[4];
        const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sdO + swz(row, col)));
        mma_bf16(dv[2 * dpair], pa, r[0], r[1]);
        mma_bf16(dv[2 * dpair + 1], pa, r[2], r[3]);
      }
      uint32_t vf[4];  // A = V (keys x d), d step kk
      {
        const int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(vf, smem_addr(sV + swz(row, col)));
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        const int row = np * 16 + (lane & 7) + (lane >> 4) * 8, col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(r, smem_addr(sdO + swz(row, col)));
        mma_bf16(dp[2 * np], vf, r[0], r[1]);
        mma_bf16(dp[2 * np + 1], vf, r[2], r[3]);
      }
    }

    // dS^T = P^T (dP^T - Dsum); masked entries have P = 0 so dS = 0 there too.
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 ds2 = *reinterpret_cast<const float2*>(s_dsum + j * 8 + 2 * qd);
      p[j][0] *= dp[j][0] - ds2.x;
      p[j][1] *= dp[j][1] - ds2.y;
      p[j][2] *= dp[j][2] - ds2.x;
      p[j][3] *= dp[j][3] - ds2.y;
    }
    uint32_t ds[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      ds[kk][0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
      ds[kk][1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
      ds[kk][2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
      ds[kk][3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
      // Stash dS^T for the dQ product: rows = keys (warp*16 + g, +8), cols = queries 16kk + 2qd (+8).
      const int r0 = warp * 16 + g, c0 = kk * 16 + 2 * qd;
      *reinterpret_cast<uint32_t*>(sdS + swz(r0, c0)) = ds[kk][0];
      *reinterpret_cast<uint32_t*>(sdS + swz(r0 + 8, c0)) = ds[kk][1];
      *reinterpret_cast<uint32_t*>(sdS + swz(r0, c0 + 8)) = ds[kk][2];
      *reinterpret_cast<uint32_t*>(sdS + swz(r0 + 8, c0 + 8)) = ds[kk][3];
    }
    // dK += dS^T Q (k over queries).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int dpair = 0; dpair < 4; ++dpair) {
        uint32_t r[4];
        const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sQ + swz(row, col)));
        mma_bf16(dk[2 * dpair], ds[kk], r[0], r[1]);
        mma_bf16(dk[2 * dpair + 1], ds[kk], r[2], r[3]);
      }
    }
    __syncthreads();  // sdS complete (and every warp is past its reads of this iteration's Q/dO/lse/Dsum)

    // dQ tile (16 queries of tile mt, kNT*8 columns from d0) = dS K, k over all kKeys keys of the block.
    constexpr int kNT = 32 / NW;         // 8-wide d tiles per warp: 8 (NW = 4) or 4 (NW = 8)
    constexpr int kSets = NW == 8 ? 2 : 1;  // independent accumulator sets (alternate k steps)
    const int mt = warp & 3, d0 = (warp >> 2) * kNT * 8;
    float dqa[kSets][kNT][4];
#pragma unroll
    for (int s = 0; s < kSets; ++s)
#pragma unroll
      for (int j = 0; j < kNT; ++j) dqa[s][j][0] = dqa[s][j][1] = dqa[s][j][2] = dqa[s][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < NW; ++kk) {
      // A = dS (query rows, key cols) read transposed from sdS: matrices (keys 16kk+0..7, queries
      // 16mt+0..7) (keys +0, queries +8) (keys +8, queries +0) (keys +8, queries +8) = a0..a3.
      uint32_t af[4];
      {
        const int key = kk * 16 + (lane & 7) + (lane >> 4) * 8, qcol = mt * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4_trans(af, smem_addr(sdS + swz(key, qcol)));
      }
#pragma unroll
      for (int dpair = 0; dpair < kNT / 2; ++dpair) {
        // B = K (keys x d) read transposed: pairs along keys.
        uint32_t r[4];
        const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = d0 + dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sK + swz(row, col)));
        mma_bf16(dqa[kk % kSets][2 * dpair], af, r[0], r[1]);
        mma_bf16(dqa[kk % kSets][2 * dpair + 1], af, r[2], r[3]);
      }
    }
    // Lane pair (qd, qd^1) swaps halves: even qd ends with row g, columns 2qd..2qd+3 of each d tile; odd qd
    // with row g+8, columns 2qd-2..2qd+1. Then one 16-byte atomic per lane and d tile.
    const bool odd = qd & 1;
    const int qrow = q0 + mt * 16 + g + (odd ? 8 : 0);
    float* dst = a.dq_acc + ((static_cast<int64_t>(b) * T + qrow) * a.Hq + hq) * kTile + d0 + 2 * qd - (odd ? 2 : 0);
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      float c[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        c[e] = dqa[0][j][e];
#pragma unroll
        for (int s = 1; s < kSets; ++s) c[e] += dqa[s][j][e];
      }
      const float r0 = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
      const float r1 = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
      const float4 val = odd ? make_float4(r0, r1, c[2], c[3]) : make_float4(c[0], c[1], r0, r1);
      if (qrow < T) atomicAdd(reinterpret_cast<float4*>(dst + j * 8), val);
    }
  }

  uint16_t* dk_base = a.dk + (static_cast<int64_t>(b) * T * a.Hkv + hk) * kTile;
  uint16_t* dv_base = a.dv + (static_cast<int64_t>(b) * T * a.Hkv + hk) * kTile;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int col = j * 8 + 2 * qd;
    if (key_row0 < T) {
      *reinterpret_cast<uint32_t*>(dk_base + key_row0 * kv_stride + col) =
          pack_bf16(dk[j][0] * a.scale, dk[j][1] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + key_row0 * kv_stride + col) = pack_bf16(dv[j][0], dv[j][1]);
    }
    if (key_row1 < T) {
      *reinterpret_cast<uint32_t*>(dk_base + key_row1 * kv_stride + col) =
          pack_bf16(dk[j][2] * a.scale, dk[j][3] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + key_row1 * kv_stride + col) = pack_bf16(dv[j][2], dv[j][3]);
    }
  }
}

}  // namespace pgolf::ops::cuda::attn
