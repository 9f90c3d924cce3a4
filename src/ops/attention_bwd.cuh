#pragma once
// FlashAttention-2-style backward, bf16, head_dim 64, mma.sync tensor cores.
//
//   1. flash_bwd_prep_kernel: Dsum[b, h, i] = sum_d dO[i, d] * O[i, d]   (fp32)
//   2. flash_bwd_kernel: one block per (64-key block, kv head, batch); warp w owns keys 16w..16w+15.
//      It walks every query head of the kv head's group (GQA: dK/dV sum over them) and every query block
//      that can see its keys, recomputing P^T = exp(S^T - lse) in registers:
//        dV += P^T dO            dP^T = V dO^T          dS^T = P^T * (dP^T - Dsum)
//        dK += dS^T Q            dQ += dS K  (through shared memory, added atomically into fp32 scratch)
//   3. flash_bwd_dq_kernel: dq (bf16) = scale * dQ scratch.
// Working in the transposed orientation (keys as rows) keeps K and V as register A operands and lets
// one block own its dK/dV rows exclusively: only dQ needs atomics.
#include <cstdint>

#include "ops/attention_bwd_layout.h"
#include "ops/attention_mma.cuh"

namespace pgolf::ops::cuda::attn {

struct BwdArgs {
  const uint16_t *q, *k, *v, *out, *dout;  // q, out, dout: (B, T, Hq, 64) ; k, v: (B, T, Hkv, 64)
  const int32_t* doc;                      // (B, T) or nullptr
  const float* lse;                        // (B, Hq, T)
  float* dsum;                             // (B, Hq, T) scratch: rowsum(dO * O)
  float* dq_acc;                           // (B, T, Hq, 64) fp32 scratch, zeroed before the main kernel
  uint16_t *dk, *dv;                       // (B, T, Hkv, 64)
  uint16_t* dq;                            // (B, T, Hq, 64)
  int B, T, Hq, Hkv;
  bool causal;
  int window;
  float scale, scale_log2;
};

// One warp per (b, t, h) row: Dsum = dot(dO, O).
__global__ void flash_bwd_prep_kernel(BwdArgs a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;  // (b, t, h) order
  const int lane = threadIdx.x & 31;
  const int64_t rows = static_cast<int64_t>(a.B) * a.T * a.Hq;
  if (row >= rows) return;
  uint32_t o2 = reinterpret_cast<const uint32_t*>(a.out + row * kTile)[lane];
  uint32_t d2 = reinterpret_cast<const uint32_t*>(a.dout + row * kTile)[lane];
  auto lo = [](uint32_t x) { return __uint_as_float(x << 16); };
  auto hi = [](uint32_t x) { return __uint_as_float(x & 0xffff0000u); };
  float s = lo(o2) * lo(d2) + hi(o2) * hi(d2);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) {
    int h = static_cast<int>(row % a.Hq);
    int64_t bt = row / a.Hq;
    int t = static_cast<int>(bt % a.T), b = static_cast<int>(bt / a.T);
    a.dsum[(static_cast<int64_t>(b) * a.Hq + h) * a.T + t] = s;
  }
}

// Dynamic shared memory of flash_bwd_kernel: K, V, two buffers of Q and dO (the next query block is loaded
// while this one is computed), dS^T, and two buffers of the query rows' lse and Dsum.
constexpr int kBwdSmemBytes = (2 + 2 * 2 + 1) * kTile * kTile * 2 + 2 * 2 * kTile * 4;

// Loads 64 floats row[0..valid) into smem (zeros past valid): cp.async when 16-byte aligned, else plain loads.
__device__ __forceinline__ void load_row64_async(float* smem, const float* row, int valid, int lane16, bool aligned) {
  if (aligned) {
    const int bytes = max(0, min(16, (valid - 4 * lane16) * 4));
    cp_async16(smem_addr(smem + 4 * lane16), bytes > 0 ? row + 4 * lane16 : row, bytes);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) smem[4 * lane16 + e] = 4 * lane16 + e < valid ? row[4 * lane16 + e] : 0.f;
  }
}

__global__ void __launch_bounds__(128) flash_bwd_kernel(BwdArgs a) {
  extern __shared__ __align__(128) unsigned char bwd_smem[];
  uint16_t* sK = reinterpret_cast<uint16_t*>(bwd_smem);
  uint16_t* sV = sK + kTile * kTile;
  uint16_t* sQbuf = sV + kTile * kTile;         // [2][64 x 64]
  uint16_t* sdObuf = sQbuf + 2 * kTile * kTile;  // [2][64 x 64]
  uint16_t* sdS = sdObuf + 2 * kTile * kTile;    // dS^T: rows = keys, cols = queries
  float* s_lse_buf = reinterpret_cast<float*>(sdS + kTile * kTile);  // [2][64] raw lse of the block's rows
  float* s_dsum_buf = s_lse_buf + 2 * kTile;                          // [2][64]
  __shared__ int s_lo[kTile], s_hi[kTile];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, qd = lane & 3;
  const int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int T = a.T, group = a.Hq / a.Hkv;
  const int k0 = kb * kTile, k_last = min(k0 + kTile, T) - 1;
  const int64_t q_stride = static_cast<int64_t>(a.Hq) * kTile, kv_stride = static_cast<int64_t>(a.Hkv) * kTile;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * T : nullptr;
  constexpr float kLog2e = 1.4426950408889634f;

  load_tile_async<128>(sK, a.k + ((static_cast<int64_t>(b) * T + k0) * a.Hkv + hk) * kTile, kv_stride, T - k0, tid);
  load_tile_async<128>(sV, a.v + ((static_cast<int64_t>(b) * T + k0) * a.Hkv + hk) * kTile, kv_stride, T - k0, tid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t kf[4][4], vf[4][4];  // A fragments of the warp's 16 keys (rows) over d steps of 16
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = kk * 16 + (lane >> 4) * 8;
    ldmatrix_x4(kf[kk], smem_addr(sK + swz(row, col)));
    ldmatrix_x4(vf[kk], smem_addr(sV + swz(row, col)));
  }

  float dk[8][4], dv[8][4];  // (16 keys, 64 d): d-tile j = columns 8j..8j+7
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.f;

  // Query blocks that can see keys k0..k_last (attention_bwd_layout.h); the iterations run over (query head
  // of the group, query block), the next one's tiles loading meanwhile.
  const QueryBlocks qblocks = bwd_query_blocks(k0, k_last, T, a.causal, a.window, doc_b, kTile);
  const int qb_begin = qblocks.qb_begin, q_end = qblocks.q_end;
  const int n_qb = q_end / kTile - qb_begin + 1, n_it = group * n_qb;
  const int key_row0 = k0 + warp * 16 + g, key_row1 = key_row0 + 8;  // this lane's two key rows
  const bool rows_aligned = (T & 3) == 0;

  auto issue = [&](int it, int buf) {
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kTile;
    const int64_t head_off = (static_cast<int64_t>(b) * T * a.Hq + hq) * kTile + q0 * q_stride;
    load_tile_async<128>(sQbuf + buf * kTile * kTile, a.q + head_off, q_stride, T - q0, tid);
    load_tile_async<128>(sdObuf + buf * kTile * kTile, a.dout + head_off, q_stride, T - q0, tid);
    const int64_t row_off = (static_cast<int64_t>(b) * a.Hq + hq) * T + q0;
    if (tid < 16)
      load_row64_async(s_lse_buf + buf * kTile, a.lse + row_off, T - q0, tid, rows_aligned);
    else if (tid < 32)
      load_row64_async(s_dsum_buf + buf * kTile, a.dsum + row_off, T - q0, tid - 16, rows_aligned);
  };
  issue(0, 0);
  cp_async_commit();

  for (int it = 0; it < n_it; ++it) {
    const int buf = it & 1;
    if (it + 1 < n_it) issue(it + 1, buf ^ 1);
    cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group in flight
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kTile;
    uint16_t* sQ = sQbuf + buf * kTile * kTile;
    uint16_t* sdO = sdObuf + buf * kTile * kTile;
    const float* s_lse = s_lse_buf + buf * kTile;
    const float* s_dsum = s_dsum_buf + buf * kTile;
    bool any = false, full = true;
    if (tid < kTile) {
      RowRange r = row_range(q0 + tid, T, a.causal, a.window, doc_b);
      s_lo[tid] = r.lo, s_hi[tid] = r.hi;
      any = max(r.lo, k0) <= min(r.hi, k_last);
      full = r.lo <= k0 && r.hi >= k0 + kTile - 1;
    }
    cp_async_wait<1>();                    // this iteration's tiles (the next one's may still be in flight)
    if (!__syncthreads_or(any)) continue;  // no query of this block sees these keys
    const bool need_mask = !__syncthreads_and(full);
    // S^T = K Q^T (16 keys x 64 queries per warp), then P^T in place (fp32).
    float p[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) p[j][0] = p[j][1] = p[j][2] = p[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        int row = np * 16 + (lane & 7) + (lane >> 4) * 8, col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(r, smem_addr(sQ + swz(row, col)));
        mma_bf16(p[2 * np], kf[kk], r[0], r[1]);
        mma_bf16(p[2 * np + 1], kf[kk], r[2], r[3]);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int qc = j * 8 + 2 * qd + e;  // query column within the block
        const float l2 = s_lse[qc] * kLog2e;
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

    // dV += P^T dO (k over queries) ; dP^T = V dO^T.
    float dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                        pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
      for (int dpair = 0; dpair < 4; ++dpair) {
        uint32_t r[4];
        int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sdO + swz(row, col)));
        mma_bf16(dv[2 * dpair], pa, r[0], r[1]);
        mma_bf16(dv[2 * dpair + 1], pa, r[2], r[3]);
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        int row = np * 16 + (lane & 7) + (lane >> 4) * 8, col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(r, smem_addr(sdO + swz(row, col)));
        mma_bf16(dp[2 * np], vf[kk], r[0], r[1]);
        mma_bf16(dp[2 * np + 1], vf[kk], r[2], r[3]);
      }
    }

    // dS^T = P^T (dP^T - Dsum); masked entries have P = 0 so dS = 0 there too.
    uint32_t ds[4][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float dsm = s_dsum[j * 8 + 2 * qd + e];
        p[j][e] *= dp[j][e] - dsm;
        p[j][2 + e] *= dp[j][2 + e] - dsm;
      }
    }
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
        int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sQ + swz(row, col)));
        mma_bf16(dk[2 * dpair], ds[kk], r[0], r[1]);
        mma_bf16(dk[2 * dpair + 1], ds[kk], r[2], r[3]);
      }
    }
    __syncthreads();  // sdS complete

    // dQ (queries 16w..16w+15 of the block, 64 d) = dS K, k over the block's 64 keys.
    float dqa[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) dqa[j][0] = dqa[j][1] = dqa[j][2] = dqa[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      // A = dS (query rows, key cols) read transposed from sdS: matrices (keys 16kk+0..7, queries
      // 16w+0..7) (keys +0, queries +8) (keys +8, queries +0) (keys +8, queries +8) = a0..a3.
      uint32_t af[4];
      {
        int key = kk * 16 + (lane & 7) + (lane >> 4) * 8, qcol = warp * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4_trans(af, smem_addr(sdS + swz(key, qcol)));
      }
#pragma unroll
      for (int dpair = 0; dpair < 4; ++dpair) {
        uint32_t r[4];
        int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(r, smem_addr(sK + swz(row, col)));
        mma_bf16(dqa[2 * dpair], af, r[0], r[1]);
        mma_bf16(dqa[2 * dpair + 1], af, r[2], r[3]);
      }
    }
    const int qr0 = q0 + warp * 16 + g, qr1 = qr0 + 8;
    float* dq0 = a.dq_acc + ((static_cast<int64_t>(b) * T + qr0) * a.Hq + hq) * kTile;
    float* dq1 = a.dq_acc + ((static_cast<int64_t>(b) * T + qr1) * a.Hq + hq) * kTile;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (qr0 < T) atomicAdd(reinterpret_cast<float2*>(dq0 + j * 8 + 2 * qd), make_float2(dqa[j][0], dqa[j][1]));
      if (qr1 < T) atomicAdd(reinterpret_cast<float2*>(dq1 + j * 8 + 2 * qd), make_float2(dqa[j][2], dqa[j][3]));
    }
    __syncthreads();  // sdS and the row tables are rewritten next; buffer `buf` is reloaded after it
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

// dq = scale * dq_acc, 4 elements per thread.
__global__ void flash_bwd_dq_kernel(BwdArgs a) {
  const int64_t n4 = static_cast<int64_t>(a.B) * a.T * a.Hq * kTile / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float4 v = reinterpret_cast<const float4*>(a.dq_acc)[i];
    uint2 o = make_uint2(pack_bf16(v.x * a.scale, v.y * a.scale), pack_bf16(v.z * a.scale, v.w * a.scale));
    reinterpret_cast<uint2*>(a.dq)[i] = o;
  }
}

}  // namespace pgolf::ops::cuda::attn
