#pragma once
// Hopper attention forward (bf16, head_dim 64) with warpgroup MMAs (wgmma, sm_90a). Same inputs,
// outputs, masks and lse convention as flash_fwd_kernel (attention_fwd.cuh), which stays the fallback
// on other devices and for comparison (attention.cu picks; PGOLF_ATTN_FWD=mma|wgmma forces one).
//
// One block = 2 warpgroups (256 threads) = 128 query rows of one (batch, head); warpgroup w owns rows
// 64w..64w+63, and inside it warp i rows 16i..16i+15 (the wgmma accumulator layout, wgmma.cuh).
// Keys are visited in blocks of kN (64 or 128). K and V blocks are double-buffered in shared memory
// with cp.async by all 256 threads, exactly as in the mma.sync kernel, so the two warpgroups share
// every K/V load. Per key block and warpgroup:
//   S (64 x kN, fp32 registers) = Q K^T : 4 wgmma m64nNk16, Q and K both K-major from shared memory;
//   online softmax on the accumulator fragment (each thread holds 2 rows, the 4 lanes of a quad hold
//   the rest of those rows: quad shuffles reduce max and sum);
//   O (64 x 64, fp32 registers) += P V : kN/16 wgmma m64n64k16 with P as bf16 register A fragments
//   (the accumulator-to-A identity of wgmma.cuh) and V read MN-major (transpose bit) from shared memory.
// Each warpgroup skips key blocks none of its own rows can see (causal diagonal, window, documents),
// the block as a whole loads the union of its two warpgroups' ranges.
//
// Shared memory (dynamic, aligned up to 1024 bytes for the 128-byte swizzle): Q 16 KiB, K and V
// 2 x kN x 128 bytes each: 48 KiB (kN = 64) or 80 KiB (kN = 128), plus 1 KiB alignment slack.
#include <cstdint>

#include "ops/attention_fwd.cuh"
#include "ops/attention_mma.cuh"
#include "ops/wgmma.cuh"

namespace pgolf::ops::cuda::attn {

constexpr int kWgRows = 128;     // query rows per block (2 warpgroups x 64)
constexpr int kWgThreads = 256;

template <int kN> constexpr int wgmma_fwd_smem_bytes() { return 1024 + kWgRows * 128 + 2 * 2 * kN * 128; }

// Loads a kRows x 64 bf16 tile (row r at base + r * row_stride elements; rows >= valid zero-filled) into
// the swizzled layout of attn::swz. Rows past `valid` read nothing, but their source address is
// clamped to row 0 of the tile, which always exists.
template <int kRows>
__device__ __forceinline__ void wg_load_tile(uint16_t* smem, const uint16_t* base, int64_t row_stride, int valid,
                                             int tid) {
#pragma unroll
  for (int i = 0; i < kRows * 8 / kWgThreads; ++i) {
    int chunk = tid + i * kWgThreads;
    int row = chunk >> 3, c = chunk & 7;
    bool ok = row < valid;
    const uint16_t* src = base + (ok ? row : 0) * row_stride + c * 8;
    cp_async16(smem_addr(smem + swz(row, c * 8)), src, ok ? 16 : 0);
  }
}

template <int kN>
__device__ __forceinline__ void wg_qk(float (&s)[kN / 2], uint64_t dq, uint64_t dk, int acc);
template <>
__device__ __forceinline__ void wg_qk<64>(float (&s)[32], uint64_t dq, uint64_t dk, int acc) {
#if PGOLF_WGMMA_AVAILABLE
  wgmma::wgmma_m64n64k16_ss(s, dq, dk, acc);
#endif
}
template <>
__device__ __forceinline__ void wg_qk<128>(float (&s)[64], uint64_t dq, uint64_t dk, int acc) {
#if PGOLF_WGMMA_AVAILABLE
  wgmma::wgmma_m64n128k16_ss(s, dq, dk, acc);
#endif
}

// Min-blocks-per-SM hint: kN = 64 keeps S at 32 registers, so two blocks (16 warps) fit an SM.
template <int kN> constexpr int wgmma_fwd_min_blocks() { return kN == 64 ? 2 : 1; }

template <int kN>
__global__ void __launch_bounds__(kWgThreads, wgmma_fwd_min_blocks<kN>()) flash_fwd_wgmma_kernel(FwdArgs a) {
#if PGOLF_WGMMA_AVAILABLE
  static_assert(kN == 64 || kN == 128, "key block must be 64 or 128");
  extern __shared__ uint8_t smem_raw[];
  __shared__ int s_lo[2], s_hi[2];
  // 1024-byte alignment of every tile: the swizzle atoms must start on 1024-byte boundaries.
  const uint32_t raw_addr = smem_addr(smem_raw);
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw + ((1024 - (raw_addr & 1023)) & 1023));
  uint16_t* sK0 = sQ + kWgRows * 64;
  uint16_t* sV0 = sK0 + 2 * kN * 64;
  constexpr int kTileElems = kN * 64;

  const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
  const int g = lane >> 2, qd = lane & 3;
  // Heaviest (latest, for causal) query blocks first so the tail of the grid is short.
  const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (a.Hq / a.Hkv);
  const int q0 = qb * kWgRows, T = a.T;
  const int32_t* doc_b = a.doc ? a.doc + static_cast<int64_t>(b) * T : nullptr;

  // Visible key range of each warpgroup (union over its 64 rows); the block loads the union of both.
  if (tid < 2) s_lo[tid] = INT32_MAX, s_hi[tid] = -1;
  __syncthreads();
  if (tid < kWgRows) {
    RowRange r = row_range(q0 + tid, T, a.causal, a.window, doc_b);
    if (r.lo <= r.hi) atomicMin(&s_lo[tid >> 6], r.lo), atomicMax(&s_hi[tid >> 6], r.hi);
  }
  const int row0 = q0 + wg * 64 + warp * 16 + g, row1 = row0 + 8;  // this thread's two rows
  const RowRange rr0 = row_range(row0, T, a.causal, a.window, doc_b);
  const RowRange rr1 = row_range(row1, T, a.causal, a.window, doc_b);
  __syncthreads();
  const int lo = min(s_lo[0], s_lo[1]), hi = max(s_hi[0], s_hi[1]);
  const int kb_begin = lo / kN, kb_end = hi / kN;  // inclusive; empty if hi < 0
  // This warpgroup's own blocks (uniform across the warpgroup, as every wgmma requires).
  const int my_begin = s_lo[wg] / kN, my_end = s_hi[wg] < 0 ? -1 : s_hi[wg] / kN;

  const int64_t q_stride = static_cast<int64_t>(a.Hq) * 64, kv_stride = static_cast<int64_t>(a.Hkv) * 64;
  const uint16_t* q_base = a.q + (static_cast<int64_t>(b) * T * a.Hq + h) * 64;
  const uint16_t* k_base = a.k + (static_cast<int64_t>(b) * T * a.Hkv + hk) * 64;
  const uint16_t* v_base = a.v + (static_cast<int64_t>(b) * T * a.Hkv + hk) * 64;

  float o[32];  // O (64 x 64) accumulator fragment: o[4j + e], columns 8j..8j+7
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max (base-2 scaled) of rows row0, row1
  float l0 = 0.f, l1 = 0.f;              // this lane's partial row sums (quad-reduced at the end)

  if (kb_begin <= kb_end) {
    wg_load_tile<kWgRows>(sQ, q_base + q0 * q_stride, q_stride, T - q0, tid);
    {
      const int k0 = kb_begin * kN;
      wg_load_tile<kN>(sK0, k_base + k0 * kv_stride, kv_stride, T - k0, tid);
      wg_load_tile<kN>(sV0, v_base + k0 * kv_stride, kv_stride, T - k0, tid);
    }
    cp_async_commit();

    const uint32_t q_addr = smem_addr(sQ) + wg * 64 * 128;  // this warpgroup's 64 rows: 8 atoms in
    for (int kb = kb_begin; kb <= kb_end; ++kb) {
      const int buf = (kb - kb_begin) & 1;
      if (kb < kb_end) {
        // The other buffer was last read by the previous iteration's wgmmas, all waited for before
        // that iteration's closing barrier.
        const int k1 = (kb + 1) * kN;
        wg_load_tile<kN>(sK0 + (buf ^ 1) * kTileElems, k_base + k1 * kv_stride, kv_stride, T - k1, tid);
        wg_load_tile<kN>(sV0 + (buf ^ 1) * kTileElems, v_base + k1 * kv_stride, kv_stride, T - k1, tid);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      wgmma::fence_proxy_async_smem();  // cp.async wrote through the generic proxy; wgmma reads async
      __syncthreads();

      if (kb >= my_begin && kb <= my_end) {
        const uint32_t k_addr = smem_addr(sK0 + buf * kTileElems), v_addr = smem_addr(sV0 + buf * kTileElems);
        // S = Q K^T: k-step kk = head dims 16kk..16kk+15 = bytes 32kk.. of each 128-byte row.
        float s[kN / 2];
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          wg_qk<kN>(s, wgmma::desc_k_major(q_addr + kk * 32), wgmma::desc_k_major(k_addr + kk * 32), kk > 0);
        wgmma::commit_group();
        wgmma::wait_group<0>();
        wgmma::fence_operand(s);

        // s[4j + e]: row row0 (e < 2) or row1 (e >= 2), key k0 + 8j + 2qd + (e & 1).
        const int k0 = kb * kN;
        const bool full0 = rr0.lo <= k0 && rr0.hi >= k0 + kN - 1;
        const bool full1 = rr1.lo <= k0 && rr1.hi >= k0 + kN - 1;
        const bool need_mask = !__all_sync(0xffffffffu, full0 && full1);
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = k0 + j * 8 + 2 * qd + e;
            float v0 = s[4 * j + e], v1 = s[4 * j + 2 + e];  // raw scores; scaled inside the exponent
            if (need_mask) {
              if (key < rr0.lo || key > rr0.hi) v0 = -INFINITY;
              if (key < rr1.lo || key > rr1.hi) v1 = -INFINITY;
            }
            s[4 * j + e] = v0, s[4 * j + 2 + e] = v1;
            mx0 = fmaxf(mx0, v0), mx1 = fmaxf(mx1, v1);
          }
        }
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
          o[4 * j] *= corr0, o[4 * j + 1] *= corr0, o[4 * j + 2] *= corr1, o[4 * j + 3] *= corr1;
        }
        // P as bf16 A fragments, k-step kk = keys 16kk..16kk+15 (accumulator columns; see wgmma.cuh).
        uint32_t pa[kN / 16][4];
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
          const float p0 = fast_exp2(fmaf(s[4 * j], a.scale_log2, -base0));
          const float p1 = fast_exp2(fmaf(s[4 * j + 1], a.scale_log2, -base0));
          const float p2 = fast_exp2(fmaf(s[4 * j + 2], a.scale_log2, -base1));
          const float p3 = fast_exp2(fmaf(s[4 * j + 3], a.scale_log2, -base1));
          l0 += p0 + p1, l1 += p2 + p3;
          pa[j >> 1][(j & 1) * 2] = pack_bf16(p0, p1);
          pa[j >> 1][(j & 1) * 2 + 1] = pack_bf16(p2, p3);
        }

        // O += P V: k-step kk = keys 16kk..16kk+15 = rows 16kk.. of the V tile, two swizzle atoms.
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk)
          wgmma::wgmma_m64n64k16_rs_tb(o, pa[kk], wgmma::desc_mn_major(v_addr + kk * 16 * 128));
        wgmma::commit_group();
        wgmma::wait_group<0>();
        wgmma::fence_operand(o);
      }
      __syncthreads();  // this buffer is refilled by the next iteration's loads
    }
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  constexpr float kLn2 = 0.6931471805599453f;
  if (row0 < T) {
    uint16_t* dst = a.out + ((static_cast<int64_t>(b) * T + row0) * a.Hq + h) * 64;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(dst + j * 8 + 2 * qd) = pack_bf16(o[4 * j] * inv0, o[4 * j + 1] * inv0);
    if (qd == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * T + row0] = l0 > 0.f ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
  }
  if (row1 < T) {
    uint16_t* dst = a.out + ((static_cast<int64_t>(b) * T + row1) * a.Hq + h) * 64;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(dst + j * 8 + 2 * qd) = pack_bf16(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
    if (qd == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * T + row1] = l1 > 0.f ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
#else
  __trap();  // built without sm_90a: attention.cu never launches this kernel then
#endif
}

}  // namespace pgolf::ops::cuda::attn
