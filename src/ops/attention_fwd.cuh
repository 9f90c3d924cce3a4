#pragma once
// FlashAttention-2-style forward, bf16, head_dim 64, tensor cores through mma.sync (see
// attention_mma.cuh for the fragment layouts).
//
// One block = 4 warps = 64 query rows of one (batch, head); warp w owns rows 16w..16w+15. Keys are
// visited in blocks of 64, K/V tiles double-buffered with cp.async. Scores stay in registers; the
// softmax is online, in fp32, in base 2 (the running max is kept in units of scale * log2 e). Key blocks that no
// query of the block can see (causal, sliding window, document start) are never loaded; the per-element
// mask is applied only to blocks that some row of the warp sees partially.
#include <cstdint>

#include "ops/attention_mma.cuh"

namespace pgolf::ops::cuda::attn {

struct FwdArgs {
  const uint16_t* q;       // (B, T, Hq, 64) bf16
  const uint16_t* k;       // (B, T, Hkv, 64)
  const uint16_t* v;       // (B, T, Hkv, 64)
  const int32_t* doc;      // (B, T) or nullptr
  uint16_t* out;           // (B, T, Hq, 64)
  float* lse;              // (B, Hq, T), natural log
  int T, Hq, Hkv;
  bool causal;
  int window;
  float scale_log2;        // scale * log2(e)
};

__global__ void __launch_bounds__(128) flash_fwd_kernel(FwdArgs a) {
  __shared__ __align__(128) uint16_t sQ[kTile * kTile];
  __shared__ __align__(128) uint16_t sK[2][kTile * kTile];
  __shared__ __align__(128) uint16_t sV[2][kTile * kTile];
  __shared__ int s_lo, s_hi;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, qd = lane & 3;
  // Heaviest (latest, for causal) query blocks first so the tail of the grid is short.
  const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (a.Hq / a.Hkv);
  const int q0 = qb * kTile, T = a.T;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * T : nullptr;

  // Union of the visible key ranges of the block's rows.
  if (tid == 0) s_lo = INT32_MAX, s_hi = -1;
  __syncthreads();
  if (tid < kTile) {
    RowRange r = row_range(q0 + tid, T, a.causal, a.window, doc_b);
    if (r.lo <= r.hi) atomicMin(&s_lo, r.lo), atomicMax(&s_hi, r.hi);
  }
  // Ranges of this thread's two rows (g and g + 8 of the warp's 16) for the per-element mask.
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  const RowRange rr0 = row_range(row0, T, a.causal, a.window, doc_b);
  const RowRange rr1 = row_range(row1, T, a.causal, a.window, doc_b);
  __syncthreads();
  const int kb_begin = s_lo / kTile, kb_end = s_hi / kTile;  // inclusive; empty if s_hi < 0

  const int64_t q_stride = static_cast<int64_t>(a.Hq) * kTile, kv_stride = static_cast<int64_t>(a.Hkv) * kTile;
  const uint16_t* q_base = a.q + (static_cast<int64_t>(b) * T * a.Hq + h) * kTile;
  const uint16_t* k_base = a.k + (static_cast<int64_t>(b) * T * a.Hkv + hk) * kTile;
  const uint16_t* v_base = a.v + (static_cast<int64_t>(b) * T * a.Hkv + hk) * kTile;

  float o[8][4];  // (16 rows, 64 d) of this warp: d-tile j holds columns 8j..8j+7
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max (base-2 scaled) of rows row0, row1
  float l0 = 0.f, l1 = 0.f;              // this lane's partial row sums (quad-reduced at the end)

  if (kb_begin <= kb_end) {
    load_tile_async<128>(sQ, q_base + q0 * q_stride, q_stride, T - q0, tid);
    {
      int k0 = kb_begin * kTile;
      load_tile_async<128>(sK[0], k_base + k0 * kv_stride, kv_stride, T - k0, tid);
      load_tile_async<128>(sV[0], v_base + k0 * kv_stride, kv_stride, T - k0, tid);
    }
    cp_async_commit();

    uint32_t qf[4][4];  // A fragments of the warp's 16 query rows, one per 16-wide d step
    for (int kb = kb_begin; kb <= kb_end; ++kb) {
      const int buf = (kb - kb_begin) & 1;
      if (kb < kb_end) {
        int k1 = (kb + 1) * kTile;
        load_tile_async<128>(sK[buf ^ 1], k_base + k1 * kv_stride, kv_stride, T - k1, tid);
        load_tile_async<128>(sV[buf ^ 1], v_base + k1 * kv_stride, kv_stride, T - k1, tid);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      if (kb == kb_begin) {
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = kk * 16 + (lane >> 4) * 8;
          ldmatrix_x4(qf[kk], smem_addr(sQ + swz(row, col)));
        }
      }

      // S = Q K^T for (16 rows, 64 keys): n-tile j = keys 8j..8j+7.
      float s[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          // matrices: (keys 16np+0..7, d 16kk+0..7) (same keys, d +8) (keys +8, d +0) (keys +8, d +8)
          uint32_t r[4];
          int key = np * 16 + (lane & 7) + (lane >> 4) * 8, col = kk * 16 + ((lane >> 3) & 1) * 8;
          ldmatrix_x4(r, smem_addr(sK[buf] + swz(key, col)));
          mma_bf16(s[2 * np], qf[kk], r[0], r[1]);
          mma_bf16(s[2 * np + 1], qf[kk], r[2], r[3]);
        }
      }

      const int k0 = kb * kTile;
      const bool full0 = rr0.lo <= k0 && rr0.hi >= k0 + kTile - 1;
      const bool full1 = rr1.lo <= k0 && rr1.hi >= k0 + kTile - 1;
      const bool need_mask = !__all_sync(0xffffffffu, full0 && full1);
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          int key = k0 + j * 8 + 2 * qd + e;
          float v0 = s[j][e], v1 = s[j][2 + e];  // raw scores; scaled inside the exponent below
          if (need_mask) {
            if (key < rr0.lo || key > rr0.hi) v0 = -INFINITY;
            if (key < rr1.lo || key > rr1.hi) v1 = -INFINITY;
          }
          s[j][e] = v0, s[j][2 + e] = v1;
          mx0 = fmaxf(mx0, v0), mx1 = fmaxf(mx1, v1);
        }
      }
      // The 4 lanes of a quad share rows: reduce across them.
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float mn0 = fmaxf(m0, mx0 * a.scale_log2), mn1 = fmaxf(m1, mx1 * a.scale_log2);
      // A row with nothing visible yet keeps max -inf: subtract 0 instead so exp2 gives 0, not NaN.
      const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
      const float corr0 = fast_exp2(m0 - base0), corr1 = fast_exp2(m1 - base1);
      m0 = mn0, m1 = mn1;
      l0 *= corr0, l1 *= corr1;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[j][0] *= corr0, o[j][1] *= corr0, o[j][2] *= corr1, o[j][3] *= corr1;
        s[j][0] = fast_exp2(fmaf(s[j][0], a.scale_log2, -base0));
        s[j][1] = fast_exp2(fmaf(s[j][1], a.scale_log2, -base0));
        s[j][2] = fast_exp2(fmaf(s[j][2], a.scale_log2, -base1));
        s[j][3] = fast_exp2(fmaf(s[j][3], a.scale_log2, -base1));
        l0 += s[j][0] + s[j][1], l1 += s[j][2] + s[j][3];
      }

      // O += P V: P's C fragments become A fragments (attention_mma.cuh), k-step kk = keys 16kk..16kk+15.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                          pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
          // .trans matrices: (keys 16kk+0..7, d 16dp+0..7) (keys +8, d +0) (keys +0, d +8) (keys +8, d +8)
          uint32_t r[4];
          int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = dp * 16 + (lane >> 4) * 8;
          ldmatrix_x4_trans(r, smem_addr(sV[buf] + swz(key, col)));
          mma_bf16(o[2 * dp], pa, r[0], r[1]);
          mma_bf16(o[2 * dp + 1], pa, r[2], r[3]);
        }
      }
      __syncthreads();  // this buffer is refilled two iterations later
    }
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  constexpr float kLn2 = 0.6931471805599453f;
  if (row0 < T) {
    uint16_t* dst = a.out + ((static_cast<int64_t>(b) * T + row0) * a.Hq + h) * kTile;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(dst + j * 8 + 2 * qd) = pack_bf16(o[j][0] * inv0, o[j][1] * inv0);
    if (qd == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * T + row0] = l0 > 0.f ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
  }
  if (row1 < T) {
    uint16_t* dst = a.out + ((static_cast<int64_t>(b) * T + row1) * a.Hq + h) * kTile;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(dst + j * 8 + 2 * qd) = pack_bf16(o[j][2] * inv1, o[j][3] * inv1);
    if (qd == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * T + row1] = l1 > 0.f ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
}

}  // namespace pgolf::ops::cuda::attn
