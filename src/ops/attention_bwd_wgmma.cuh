#pragma once
// Hopper attention backward (bf16, head_dim 64) with warpgroup MMAs (wgmma, sm_90a): the main kernel only;
// the Dsum prep kernel, the fp32 dQ scratch and its conversion kernel are v1's (attention_bwd.cuh), and so
// are the inputs, outputs, masks and the query-block bounds (attention_bwd_layout.h). attention.cu picks
// the kernel (PGOLF_ATTN_BWD=v1|wgmma|wgmma128|wgmma64|wgmma-dqmma); v1 stays the fallback off compute
// capability 9.0.
//
// One block = kWgs warpgroups (wgmma128: 2, one block per SM; wgmma64: 1, two blocks per SM) = 64 kWgs keys
// of one (kv head, batch): warpgroup w owns keys k0 + 64w .. k0 + 64w + 63, and inside it warp i keys
// 16i..16i+15 (the wgmma accumulator rows, wgmma.cuh).
// Keys are the M dimension of everything the warpgroup computes ("transposed" orientation, as v1), so dV and
// dK accumulate in registers over the whole walk and the block owns its dK/dV rows exclusively. The block
// walks every query head of the GQA group and every 64-row query block that can see its keys; per query
// block (Q, dO, lse, Dsum in shared memory, double-buffered with cp.async) each warpgroup computes
//   S^T  (64 keys x 64 queries) = K_w Q^T     4 wgmma m64n64k16, A = K (K-major), B = Q (K-major)
//   dP^T (64 x 64)              = V_w dO^T    4 wgmma, A = V (K-major), B = dO (K-major)
//   P^T = exp2(S^T scale_log2 - lse log2 e), masked to 0; dS^T = P^T (dP^T - Dsum)   (fp32 registers)
//   dV += P^T dO    4 wgmma, A = P^T as bf16 register fragments (accumulator = A identity), B = dO MN-major
//   dK += dS^T Q    4 wgmma, A = dS^T registers, B = Q MN-major
//   dQ_w (64 queries x 64 dims) = dS_w K_w : dS^T is stored to shared memory (bf16, 128-byte swizzle, rows =
//     keys) and read back as the MN-major ("transposed", imm-trans-a) A operand, B = K_w MN-major. Variant
//     kDqWgmma = false computes this product with mma.sync + ldmatrix.trans instead (v1's code): a
//     diagnostic (wgmma-dqmma) -- if only wgmma128 / wgmma64 get dq wrong, the transposed-A path is at fault.
// The warpgroups' dQ partials (fp32) are staged in shared memory and, after the next iteration's barrier,
// summed and added to the fp32 dQ scratch with one float4 atomic per 4 elements (with 2 warpgroups half of
// v1's atomics per key: 128 keys per block instead of 64) while that iteration's first MMAs run.
// A warpgroup none of whose keys the query block can see skips its MMAs (causal diagonal, windows, documents,
// keys past T); a query block neither can see is skipped whole.
//
// Synchronisation: one block barrier per query block (its tiles have landed; the previous iteration's dQ
// partials are staged), one warpgroup barrier (the warpgroup's dS^T tile is stored). Everything written per
// iteration is double-buffered by parity, so the barrier separates each write from the reads of two
// iterations earlier; the loads of iteration it + 1 are issued right after iteration it's barrier, into the
// buffers iteration it - 1 used. No warp specialisation yet: all threads issue the cp.async loads, and a
// warpgroup's MMAs run in two batches, (S, dP) then (dV, dK, dQ), with the softmax-gradient math in between.
//
// Shared memory (attention_bwd_layout.h, per warpgroup): K, V 8 KiB each, dS^T 8 KiB, dQ staging 2 iterations
// x 18 KiB; shared: Q and dO 2 x 8 KiB each, lse/Dsum 1 KiB. wgmma128: 154 KiB (+1 KiB alignment), one block
// (8 warps) per SM; wgmma64: 94 KiB, two blocks (2 x 4 warps). Registers (ptxas, CUDA 13.0: about 227 per
// thread, no spills): dK, dV accumulators 64 for the whole walk, S^T and dP^T 64 more, then the P / dS
// fragments (32) and dQ (32).
#include <cstdint>

#include "ops/attention_bwd.cuh"
#include "ops/attention_bwd_layout.h"
#include "ops/attention_mma.cuh"
#include "ops/wgmma.cuh"

namespace pgolf::ops::cuda::attn {

// Loads a kRows x 64 bf16 tile (row r at base + r * row_stride elements; rows >= valid zero-filled) into
// the 128-byte-swizzled layout (wgmma::sw128_byte) at shared address `dst`, all kThreads threads taking part.
// Rows past `valid` read nothing, but their source address is clamped to row 0, which always exists.
template <int kRows, int kThreads>
__device__ __forceinline__ void bwd_load_tile(uint32_t dst, const uint16_t* base, int64_t row_stride, int valid,
                                              int tid) {
#pragma unroll
  for (int i = 0; i < kRows * 8 / kThreads; ++i) {
    const int chunk = tid + i * kThreads, row = chunk >> 3, c = chunk & 7;
    const bool ok = row < valid;
    cp_async16(dst + wgmma::sw128_byte(row, c * 8), base + (ok ? row : 0) * row_stride + c * 8, ok ? 16 : 0);
  }
}

// Barrier of the 128 threads of warpgroup wg (ids 1, 2; __syncthreads is 0). Immediate ids keep ptxas from
// reserving all 16 barriers of the block.
__device__ __forceinline__ void bwd_warpgroup_barrier(int wg) {
  if (wg == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

template <int kWgs, bool kDqWgmma>
__global__ void __launch_bounds__(BwdWgPlan<kWgs>::kThreads, 3 - kWgs) flash_bwd_wgmma_kernel(BwdArgs a) {
#if PGOLF_WGMMA_AVAILABLE
  using P = BwdWgPlan<kWgs>;
  constexpr int kKeys = P::kKeys, kThreads = P::kThreads;
  extern __shared__ uint8_t bwd_wg_smem[];
  __shared__ int s_lo[2][kBwdWgQRows], s_hi[2][kBwdWgQRows];  // [buffer]: visible key range of each query row
  __shared__ uint32_t s_flags[2][2];  // [buffer][warp 0 | 1]: OR over its queries of the bits below
  const uint32_t raw_addr = smem_addr(bwd_wg_smem);
  uint8_t* smem = bwd_wg_smem + ((1024 - (raw_addr & 1023)) & 1023);
  const uint32_t base = smem_addr(smem);
  float* s_dq = reinterpret_cast<float*>(smem + P::kOffDq);      // [2][kWgs][64 x kBwdDqStride]
  float* s_lse = reinterpret_cast<float*>(smem + P::kOffLse);    // [2][64]
  float* s_dsum = reinterpret_cast<float*>(smem + P::kOffDsum);  // [2][64]

  const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
  const int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int T = a.T, group = a.Hq / a.Hkv;
  const int k0 = kb * kKeys, k_last = min(k0 + kKeys, T) - 1;
  const int64_t q_stride = static_cast<int64_t>(a.Hq) * 64, kv_stride = static_cast<int64_t>(a.Hkv) * 64;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * T : nullptr;
  constexpr float kLog2e = 1.4426950408889634f;

  const int64_t kv_off = (static_cast<int64_t>(b) * T + k0) * a.Hkv + hk;
  bwd_load_tile<kKeys, kThreads>(base + P::kOffK, a.k + kv_off * 64, kv_stride, T - k0, tid);
  bwd_load_tile<kKeys, kThreads>(base + P::kOffV, a.v + kv_off * 64, kv_stride, T - k0, tid);
  cp_async_commit();

  const QueryBlocks qblocks = bwd_query_blocks(k0, k_last, T, a.causal, a.window, doc_b, kBwdWgQRows);
  const int qb_begin = qblocks.qb_begin;
  const int n_qb = qblocks.q_end / kBwdWgQRows - qb_begin + 1, n_it = group * n_qb;
  const bool rows_aligned = (T & 3) == 0;

  // Iteration it = (query head of the group, query block): Q, dO, lse, Dsum into buffer `buf`.
  auto issue = [&](int it, int buf) {
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kBwdWgQRows;
    const int64_t head_off = (static_cast<int64_t>(b) * T * a.Hq + hq) * 64 + q0 * q_stride;
    bwd_load_tile<kBwdWgQRows, kThreads>(base + P::kOffQ + buf * kBwdWgQRows * 128, a.q + head_off, q_stride,
                                         T - q0, tid);
    bwd_load_tile<kBwdWgQRows, kThreads>(base + P::kOffDo + buf * kBwdWgQRows * 128, a.dout + head_off, q_stride,
                                         T - q0, tid);
    const int64_t row_off = (static_cast<int64_t>(b) * a.Hq + hq) * T + q0;
    if (tid < 16)
      load_row64_async(s_lse + buf * kBwdWgQRows, a.lse + row_off, T - q0, tid, rows_aligned);
    else if (tid < 32)
      load_row64_async(s_dsum + buf * kBwdWgQRows, a.dsum + row_off, T - q0, tid - 16, rows_aligned);
  };
  if (n_it > 0) issue(0, 0);
  cp_async_commit();  // (with K and V: the first iteration waits for all groups)

  // This warpgroup's operands: its 64 rows of K and V, its dS^T tile.
  const uint32_t k_w = base + P::kOffK + wg * 64 * 128, v_w = base + P::kOffV + wg * 64 * 128;
  const uint32_t ds_w = base + P::kOffDs + wg * 64 * 128;
  const int kw0 = k0 + 64 * wg;                                // the warpgroup's first key
  const int key0 = kw0 + wgmma::acc_row(wtid, 0), key1 = key0 + 8;  // this thread's accumulator rows

  float dv[32], dk[32];  // (64 keys x 64 dims) accumulators: register 4j + e, see wgmma_layout.h
#pragma unroll
  for (int i = 0; i < 32; ++i) dv[i] = dk[i] = 0.f;

  // dQ scratch += the sum of the staged partials of iteration `it` (of the warpgroups in `flags` bits 0, 1):
  // float4 atomics, a warp covering two whole query rows.
  auto reduce_dq = [&](int it, uint32_t flags, int hq, int q0) {
    const float* st0 = s_dq + (it & 1) * kWgs * kBwdDqTileFloats;
#pragma unroll
    for (int i = 0; i < P::kReduceSteps; ++i) {
      const int row = bwd_dq_reduce_row(tid, i, kThreads), col = bwd_dq_reduce_col(tid, i, kThreads), q = q0 + row;
      if (q >= T) continue;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (flags & 1u) v = *reinterpret_cast<const float4*>(st0 + bwd_dq_stage_index(row, col));
      if (kWgs == 2 && (flags & 2u)) {
        const float4 w = *reinterpret_cast<const float4*>(st0 + kBwdDqTileFloats + bwd_dq_stage_index(row, col));
        v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
      }
      atomicAdd(reinterpret_cast<float4*>(a.dq_acc + ((static_cast<int64_t>(b) * T + q) * a.Hq + hq) * 64 + col), v);
    }
  };
  // The previous iteration, whose staged dQ is reduced once the next barrier has made it complete (flags 0:
  // nothing staged).
  uint32_t prev_flags = 0;
  int prev_hq = 0, prev_q0 = 0;

  // Shared state written per iteration is double-buffered by its parity (tiles, lse/Dsum, row ranges, flags,
  // dQ staging): the one barrier per iteration then separates every write from the reads of two iterations
  // before, which is all the ordering needed since one warpgroup may still be finishing iteration it while the
  // other starts it + 1.
  for (int it = 0; it < n_it; ++it) {
    const int buf = it & 1;
    const int hq = hk * group + it / n_qb, q0 = (qb_begin + it % n_qb) * kBwdWgQRows;
    if (tid < kBwdWgQRows) {
      // Row ranges of the block's queries, and per warpgroup whether any query sees any of its keys (bits
      // 0, 1) and whether some query does not see all of them (bits 2, 3: masking needed), see
      // bwd_query_flags.
      const RowRange r = row_range(q0 + tid, T, a.causal, a.window, doc_b);
      s_lo[buf][tid] = r.lo, s_hi[buf][tid] = r.hi;
      const uint32_t bits = __reduce_or_sync(0xffffffffu, bwd_query_flags(r.lo, r.hi, k0, T, kWgs));
      if (lane == 0) s_flags[buf][tid >> 5] = bits;
    }
    cp_async_wait<0>();                // this iteration's tiles, issued one iteration ago
    wgmma::fence_proxy_async_smem();  // cp.async wrote through the generic proxy; wgmma reads async
    __syncthreads();
    // The next iteration's tiles go to the buffers iteration it - 1 used: every thread is past it now.
    if (it + 1 < n_it) {
      issue(it + 1, buf ^ 1);
      cp_async_commit();
    }
    // s_flags is double-buffered: a thread that skips ahead writes the other buffer.
    const uint32_t flags = s_flags[buf][0] | s_flags[buf][1];
    const bool active = (flags >> wg) & 1u, need_mask = (flags >> (2 + wg)) & 1u;
    const uint32_t q_addr = base + P::kOffQ + buf * kBwdWgQRows * 128;
    const uint32_t do_addr = base + P::kOffDo + buf * kBwdWgQRows * 128;

    // The previous iteration's partials were staged before the barrier above; their tiles are next written
    // in iteration it + 1, after the next barrier. An active warpgroup reduces them while its first MMAs run.
    const bool reduce_prev = prev_flags & 3u;
    if (active) {
      // S^T = K_w Q^T and dP^T = V_w dO^T, k-step kk = head dims 16kk..16kk+15. (The MMAs of a warpgroup
      // are issued and waited for inside one branch on `active`: split across two, ptxas serialises them.)
      float s[32], dp[32];
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma::wgmma_m64n64k16_ss(s, wgmma::desc_k_major_kstep(k_w, kk), wgmma::desc_k_major_kstep(q_addr, kk),
                                  kk > 0);
      wgmma::commit_group();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma::wgmma_m64n64k16_ss(dp, wgmma::desc_k_major_kstep(v_w, kk), wgmma::desc_k_major_kstep(do_addr, kk),
                                  kk > 0);
      wgmma::commit_group();
      if (reduce_prev) reduce_dq(it - 1, prev_flags, prev_hq, prev_q0);
      wgmma::wait_group<1>();
      wgmma::fence_operand(s);

      // P^T in place: s[4j + e] is key key0 (e < 2) or key1, query column 8j + 2qd + (e & 1).
      const float* lse = s_lse + buf * kBwdWgQRows;
      const float* dsum = s_dsum + buf * kBwdWgQRows;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int qc = wgmma::acc_col(wtid, 4 * j);
        const float2 l = *reinterpret_cast<const float2*>(lse + qc);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float l2 = (e ? l.y : l.x) * kLog2e;
          float v0 = fast_exp2(fmaf(s[4 * j + e], a.scale_log2, -l2));
          float v1 = fast_exp2(fmaf(s[4 * j + 2 + e], a.scale_log2, -l2));
          if (need_mask) {  // replace, never multiply: a row with lse = -inf gives inf here
            const int lo = s_lo[buf][qc + e], hi = s_hi[buf][qc + e];
            if (key0 < lo || key0 > hi) v0 = 0.f;
            if (key1 < lo || key1 > hi) v1 = 0.f;
          }
          s[4 * j + e] = v0, s[4 * j + 2 + e] = v1;
        }
      }
      wgmma::wait_group<0>();
      wgmma::fence_operand(dp);

      // dS^T = P^T (dP^T - Dsum); bf16 A fragments of P^T and dS^T (k-step kk = queries 16kk..16kk+15), and
      // dS^T into this warpgroup's shared tile for the dQ product (rows = keys, 128-byte swizzle).
      uint32_t pa[4][4], dsa[4][4];
      uint8_t* ds_tile = smem + P::kOffDs + wg * 64 * 128;
      const int r0 = wgmma::acc_row(wtid, 0);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int qc = wgmma::acc_col(wtid, 4 * j);
        const float2 dsm = *reinterpret_cast<const float2*>(dsum + qc);
        const float d00 = s[4 * j] * (dp[4 * j] - dsm.x), d01 = s[4 * j + 1] * (dp[4 * j + 1] - dsm.y);
        const float d10 = s[4 * j + 2] * (dp[4 * j + 2] - dsm.x), d11 = s[4 * j + 3] * (dp[4 * j + 3] - dsm.y);
        // Accumulator registers 4j..4j+3 are A registers (j & 1) * 2 + {0, 1} of k-step j / 2.
        pa[j >> 1][(j & 1) * 2] = pack_bf16(s[4 * j], s[4 * j + 1]);
        pa[j >> 1][(j & 1) * 2 + 1] = pack_bf16(s[4 * j + 2], s[4 * j + 3]);
        dsa[j >> 1][(j & 1) * 2] = pack_bf16(d00, d01);
        dsa[j >> 1][(j & 1) * 2 + 1] = pack_bf16(d10, d11);
        *reinterpret_cast<uint32_t*>(ds_tile + wgmma::sw128_byte(r0, qc)) = dsa[j >> 1][(j & 1) * 2];
        *reinterpret_cast<uint32_t*>(ds_tile + wgmma::sw128_byte(r0 + 8, qc)) = dsa[j >> 1][(j & 1) * 2 + 1];
      }

      // dV += P^T dO and dK += dS^T Q: k-step kk = queries 16kk..16kk+15 = rows 16kk.. of the dO / Q tile.
      wgmma::fence_operand(dv);
      wgmma::fence_operand(dk);
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma::wgmma_m64n64k16_rs_tb(dv, pa[kk], wgmma::desc_mn_major_kstep(do_addr, kk));
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma::wgmma_m64n64k16_rs_tb(dk, dsa[kk], wgmma::desc_mn_major_kstep(q_addr, kk));
      wgmma::commit_group();

      // dQ_w (64 queries x 64 dims) = dS_w K_w, k-step kk = keys 16kk..16kk+15 of this warpgroup.
      float dq[32];
      if constexpr (kDqWgmma) {
        wgmma::fence_proxy_async_smem();  // the dS^T stores above, for the async proxy
        bwd_warpgroup_barrier(wg);        // the warpgroup's whole dS^T tile is stored
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          wgmma::wgmma_m64n64k16_ss_tt(dq, wgmma::desc_mn_major_kstep(ds_w, kk), wgmma::desc_mn_major_kstep(k_w, kk),
                                       kk > 0);
        wgmma::commit_group();
        wgmma::wait_group<0>();
        wgmma::fence_operand(dq);
      } else {
        bwd_warpgroup_barrier(wg);
        // Warp `warp` computes queries 16 warp .. 16 warp + 15 (its accumulator rows) with mma.sync: A = dS
        // (queries x keys) by ldmatrix.trans from the dS^T tile, B = K_w by ldmatrix.trans; the m16n8 C
        // fragment of column tile j is accumulator registers 4j..4j+3.
        float acc[8][4];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint32_t af[4];
          const int key = kk * 16 + (lane & 7) + (lane >> 4) * 8, qcol = warp * 16 + ((lane >> 3) & 1) * 8;
          ldmatrix_x4_trans(af, ds_w + wgmma::sw128_byte(key, qcol));
#pragma unroll
          for (int dpair = 0; dpair < 4; ++dpair) {
            uint32_t r[4];
            const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dpair * 16 + (lane >> 4) * 8;
            ldmatrix_x4_trans(r, k_w + wgmma::sw128_byte(row, col));
            mma_bf16(acc[2 * dpair], af, r[0], r[1]);
            mma_bf16(acc[2 * dpair + 1], af, r[2], r[3]);
          }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) dq[4 * j + e] = acc[j][e];
        wgmma::wait_group<0>();
      }
      // The register A operands must stay untouched until the dV/dK wgmmas are done (waited above).
      wgmma::fence_operand(pa[0]), wgmma::fence_operand(pa[1]), wgmma::fence_operand(pa[2]);
      wgmma::fence_operand(pa[3]), wgmma::fence_operand(dsa[0]), wgmma::fence_operand(dsa[1]);
      wgmma::fence_operand(dsa[2]), wgmma::fence_operand(dsa[3]);
      wgmma::fence_operand(dv);
      wgmma::fence_operand(dk);

      // Stage this warpgroup's dQ partial (rows = queries) for the sum with the other warpgroup's, reduced
      // by the next iteration (or after the loop).
      float* stage = s_dq + (buf * kWgs + wg) * kBwdDqTileFloats;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = wgmma::acc_col(wtid, 4 * j);
        *reinterpret_cast<float2*>(stage + bwd_dq_stage_index(r0, col)) = make_float2(dq[4 * j], dq[4 * j + 1]);
        *reinterpret_cast<float2*>(stage + bwd_dq_stage_index(r0 + 8, col)) =
            make_float2(dq[4 * j + 2], dq[4 * j + 3]);
      }
    } else if (reduce_prev) {
      reduce_dq(it - 1, prev_flags, prev_hq, prev_q0);
    }
    prev_flags = flags, prev_hq = hq, prev_q0 = q0;  // flags 0: nothing staged this time
  }
  cp_async_wait<0>();
  __syncthreads();  // the last iteration's partials are staged
  if (prev_flags & 3u) reduce_dq(n_it - 1, prev_flags, prev_hq, prev_q0);

  uint16_t* dk_base = a.dk + (static_cast<int64_t>(b) * T * a.Hkv + hk) * 64;
  uint16_t* dv_base = a.dv + (static_cast<int64_t>(b) * T * a.Hkv + hk) * 64;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int col = wgmma::acc_col(wtid, 4 * j);
    if (key0 < T) {
      *reinterpret_cast<uint32_t*>(dk_base + key0 * kv_stride + col) =
          pack_bf16(dk[4 * j] * a.scale, dk[4 * j + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + key0 * kv_stride + col) = pack_bf16(dv[4 * j], dv[4 * j + 1]);
    }
    if (key1 < T) {
      *reinterpret_cast<uint32_t*>(dk_base + key1 * kv_stride + col) =
          pack_bf16(dk[4 * j + 2] * a.scale, dk[4 * j + 3] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + key1 * kv_stride + col) = pack_bf16(dv[4 * j + 2], dv[4 * j + 3]);
    }
  }
#else
  __trap();  // built without sm_90a: attention.cu never launches this kernel then
#endif
}

}  // namespace pgolf::ops::cuda::attn
