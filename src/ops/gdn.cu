// CUDA GatedDeltaNet ops (TECHNIQUES.md §5.18, docs/GDN.md). One thread block per (batch, head) walks
// the row's chunks in order (forward) or in reverse (backward) with the Dk x Dv state and the chunk's
// tiles in shared memory; intra-chunk work is dense loops over the block's threads, and the triangular
// solves run one column per thread (columns are independent). fp32 throughout; q, k, v, o, dout and the
// input gradients may be f32 or bf16 (DevPtr), g, beta, states and their gradients are f32.
// This is the straightforward first version (no tensor cores); docs/GDN.md lists its shared memory.
//
// Shared-memory rows are padded by one float (Geo::kp, vp, sp, cp). The C x C products read one key row per
// thread (k_s[i] for 32 consecutive s in a warp), and dq/dk read one state row per thread (S0[i][j] for 32
// consecutive i): with unpadded rows of 64 floats those 32 addresses fall in one bank, a 32-way conflict that
// serialises every such load. A stride of D + 1 spreads them over all 32 banks. Padding changes addresses only,
// never the order of any sum, so both layouts give bit-identical results; PGOLF_GDN_UNPADDED=1 selects the old
// layout (for timing comparisons).
//
// The tensor-core kernels (gdn_tc_fwd.cuh, gdn_tc_bwd.cuh: tf32 mma.sync, blocked triangular solves, Dk = Dv =
// chunk = 64) replace the loop kernels of the chunked forward and backward where ops/gdn.h's GdnKernel choice says
// so; the loop kernels stay for every other shape and for f32 by default.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "ops/cuda_common.cuh"
#include "ops/gdn.h"
#include "ops/gdn_tc_bwd.cuh"
#include "ops/gdn_tc_fwd.cuh"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Shapes, and the row strides of the shared-memory tiles: kp for q/k rows (Dk wide), vp for v-like rows (Dv wide:
// U, Vt, dO, dU), sp for state rows (S[i][j], Dv wide), cp for C x C rows. Global memory stays dense.
struct Geo {
  int B, T, H, Dk, Dv, C, NC;
  int kp, vp, sp, cp;
};

// ---------------------------------------------------------------------------------------------------------
// Shared memory of the forward, in floats: S (Dk rows), K, Q (C rows of kp each), U (C rows of vp), Ak (C rows
// of cp), gc, bt, eb, ee (C each).
size_t fwd_smem_floats(const Geo& g) {
  return size_t(g.Dk) * g.sp + 2 * size_t(g.C) * g.kp + size_t(g.C) * g.vp + size_t(g.C) * g.cp + 4 * size_t(g.C);
}
// Backward: S0, dS (Dk rows each), Q, K (C rows of kp), Vt, U, dO, dU (C rows of vp), Ak, dP, dA (C rows of cp),
// gc, bt, eb, ee, dgc, dbt, xs (C each), 32 for the block reduction.
size_t bwd_smem_floats(const Geo& g) {
  return 2 * size_t(g.Dk) * g.sp + 2 * size_t(g.C) * g.kp + 4 * size_t(g.C) * g.vp + 3 * size_t(g.C) * g.cp +
         7 * size_t(g.C) + 32;
}

// Element x of a dense Dk x Dv state (global layout) at its padded place in shared memory.
__device__ __forceinline__ int st_at(const Geo& G, int x) { return (x / G.Dv) * G.sp + x % G.Dv; }

__device__ __forceinline__ int64_t row_of(const Geo& g, int b, int t, int h) {
  return (static_cast<int64_t>(b) * g.T + t) * g.H + h;
}

// Loads the chunk's q, k (into smem), gc = cumsum(g), bt = beta, eb_r = exp(gc_r) and ee_r = exp(gc_L - gc_r).
// Ends with a barrier.
__device__ void load_chunk(const Geo& G, DevPtr q, DevPtr k, const float* g, const float* beta, int b, int h, int t0,
                           int L, float* Qs, float* Ks, float* gc, float* bt, float* eb, float* ee) {
  for (int x = threadIdx.x; x < L * G.Dk; x += blockDim.x) {
    const int r = x / G.Dk, i = x % G.Dk;
    const int64_t off = row_of(G, b, t0 + r, h) * G.Dk + i;
    Qs[r * G.kp + i] = load1(q, off);
    Ks[r * G.kp + i] = load1(k, off);
  }
  // g and beta are gathered by all threads first: one thread loading them in its cumsum loop waited out a global
  // load latency per row. The cumsum itself stays sequential (the order every other version sums in).
  for (int r = threadIdx.x; r < L; r += blockDim.x) {
    const int64_t row = row_of(G, b, t0 + r, h);
    gc[r] = g[row];
    bt[r] = beta[row];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.f;
    for (int r = 0; r < L; ++r) {
      acc += gc[r];
      gc[r] = acc;
    }
  }
  __syncthreads();
  for (int r = threadIdx.x; r < L; r += blockDim.x) {
    eb[r] = expf(gc[r]);
    ee[r] = expf(gc[L - 1] - gc[r]);
  }
  __syncthreads();
}

// Ak_rs = exp(gc_r - gc_s) k_r.k_s for s < r (0 elsewhere, including padding rows/cols up to C), and
// R_rj = beta_r (v_rj - b_r (S0^T k_r)_j) into Us (and vt_rj into Vt when given). Ends with a barrier.
__device__ void build_rhs(const Geo& G, DevPtr v, int b, int h, int t0, int L, const float* S0, const float* Ks,
                          const float* gc, const float* bt, const float* eb, float* Ak, float* Us, float* Vt) {
  for (int x = threadIdx.x; x < G.C * G.C; x += blockDim.x) {
    const int r = x / G.C, s = x % G.C;
    float a = 0.f;
    if (r < L && s < r) {
      const float* kr = Ks + r * G.kp;
      const float* ks = Ks + s * G.kp;
      for (int i = 0; i < G.Dk; ++i) a += kr[i] * ks[i];
      a *= expf(gc[r] - gc[s]);
    }
    Ak[r * G.cp + s] = a;
  }
  for (int x = threadIdx.x; x < L * G.Dv; x += blockDim.x) {
    const int r = x / G.Dv, j = x % G.Dv;
    const float* kr = Ks + r * G.kp;
    float sk = 0.f;
    for (int i = 0; i < G.Dk; ++i) sk += S0[i * G.sp + j] * kr[i];
    const float vt = load1(v, row_of(G, b, t0 + r, h) * G.Dv + j) - eb[r] * sk;
    if (Vt) Vt[r * G.vp + j] = vt;
    Us[r * G.vp + j] = bt[r] * vt;
  }
  __syncthreads();
}

// (I + A) U = R in place, A_rs = beta_r Ak_rs: one column per thread. Ends with a barrier.
__device__ void forward_solve(const Geo& G, int L, const float* Ak, const float* bt, float* Us) {
  for (int j = threadIdx.x; j < G.Dv; j += blockDim.x)
    for (int r = 1; r < L; ++r) {
      float acc = 0.f;
      for (int s = 0; s < r; ++s) acc += Ak[r * G.cp + s] * Us[s * G.vp + j];
      Us[r * G.vp + j] -= bt[r] * acc;
    }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads)
    gdn_fwd_kernel(Geo G, DevPtr q, DevPtr k, DevPtr v, const float* g, const float* beta, const float* init, DevPtr o,
                   float* states, float* fin) {
  extern __shared__ float sm[];
  const int SS = G.Dk * G.Dv;
  float* S = sm;
  float* Ks = S + G.Dk * G.sp;
  float* Qs = Ks + G.C * G.kp;
  float* Us = Qs + G.C * G.kp;
  float* Ak = Us + G.C * G.vp;
  float* gc = Ak + G.C * G.cp;
  float* bt = gc + G.C;
  float* eb = bt + G.C;
  float* ee = eb + G.C;
  const int bh = blockIdx.x, b = bh / G.H, h = bh % G.H;
  for (int x = threadIdx.x; x < SS; x += blockDim.x)
    S[st_at(G, x)] = init ? init[static_cast<int64_t>(bh) * SS + x] : 0.f;
  __syncthreads();
  for (int c = 0; c < G.NC; ++c) {
    const int t0 = c * G.C, L = min(G.C, G.T - t0);
    float* sc = states + (static_cast<int64_t>(bh) * G.NC + c) * SS;
    for (int x = threadIdx.x; x < SS; x += blockDim.x) sc[x] = S[st_at(G, x)];
    load_chunk(G, q, k, g, beta, b, h, t0, L, Qs, Ks, gc, bt, eb, ee);
    build_rhs(G, v, b, h, t0, L, S, Ks, gc, bt, eb, Ak, Us, nullptr);
    forward_solve(G, L, Ak, bt, Us);
    // P_rs = exp(gc_r - gc_s) q_r.k_s (s <= r) into Ak (no longer needed).
    for (int x = threadIdx.x; x < L * G.C; x += blockDim.x) {
      const int r = x / G.C, s = x % G.C;
      float p = 0.f;
      if (s <= r) {
        const float* qr = Qs + r * G.kp;
        const float* ks = Ks + s * G.kp;
        for (int i = 0; i < G.Dk; ++i) p += qr[i] * ks[i];
        p *= expf(gc[r] - gc[s]);
      }
      Ak[r * G.cp + s] = p;
    }
    __syncthreads();
    // o_r = b_r S0^T q_r + sum_{s<=r} P_rs u_s
    for (int x = threadIdx.x; x < L * G.Dv; x += blockDim.x) {
      const int r = x / G.Dv, j = x % G.Dv;
      const float* qr = Qs + r * G.kp;
      float sq = 0.f;
      for (int i = 0; i < G.Dk; ++i) sq += S[i * G.sp + j] * qr[i];
      float acc = eb[r] * sq;
      for (int s = 0; s <= r; ++s) acc += Ak[r * G.cp + s] * Us[s * G.vp + j];
      store1(o, row_of(G, b, t0 + r, h) * G.Dv + j, acc);
    }
    __syncthreads();
    // S = b_L S + sum_r exp(gc_L - gc_r) k_r u_r^T
    const float bl = eb[L - 1];
    for (int x = threadIdx.x; x < SS; x += blockDim.x) {
      const int i = x / G.Dv, j = x % G.Dv;
      float acc = bl * S[i * G.sp + j];
      for (int r = 0; r < L; ++r) acc += ee[r] * Ks[r * G.kp + i] * Us[r * G.vp + j];
      S[i * G.sp + j] = acc;
    }
    __syncthreads();
  }
  if (fin)
    for (int x = threadIdx.x; x < SS; x += blockDim.x) fin[static_cast<int64_t>(bh) * SS + x] = S[st_at(G, x)];
}

// Min blocks 1: the backward's ~185 KB of shared memory allow one block per SM anyway, and without it ptxas capped
// the kernel at 64 registers and spilled.
__global__ void __launch_bounds__(kThreads, 1)
    gdn_bwd_kernel(Geo G, DevPtr q, DevPtr k, DevPtr v, const float* g, const float* beta, const float* states,
                   DevPtr dout, const float* dfin, DevPtr dq, DevPtr dk, DevPtr dv, float* dg, float* dbeta,
                   float* dinit) {
  extern __shared__ float sm[];
  const int SS = G.Dk * G.Dv, C = G.C, Dk = G.Dk, Dv = G.Dv;
  const int kp = G.kp, vp = G.vp, sp = G.sp, cp = G.cp;
  float* S0 = sm;
  float* dS = S0 + Dk * sp;
  float* Qs = dS + Dk * sp;
  float* Ks = Qs + C * kp;
  float* Vt = Ks + C * kp;
  float* Us = Vt + C * vp;
  float* dO = Us + C * vp;
  float* dU = dO + C * vp;
  float* Ak = dU + C * vp;
  float* dP = Ak + C * cp;
  float* dA = dP + C * cp;
  float* gc = dA + C * cp;
  float* bt = gc + C;
  float* eb = bt + C;
  float* ee = eb + C;
  float* dgc = ee + C;
  float* dbt = dgc + C;
  float* xs = dbt + C;
  float* red = xs + C;
  const int bh = blockIdx.x, b = bh / G.H, h = bh % G.H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int x = threadIdx.x; x < SS; x += blockDim.x)
    dS[st_at(G, x)] = dfin ? dfin[static_cast<int64_t>(bh) * SS + x] : 0.f;
  for (int c = G.NC - 1; c >= 0; --c) {
    const int t0 = c * C, L = min(C, G.T - t0);
    const float* sc = states + (static_cast<int64_t>(bh) * G.NC + c) * SS;
    for (int x = threadIdx.x; x < SS; x += blockDim.x) S0[st_at(G, x)] = sc[x];
    for (int x = threadIdx.x; x < L * Dv; x += blockDim.x)
      dO[(x / Dv) * vp + x % Dv] = load1(dout, row_of(G, b, t0 + x / Dv, h) * Dv + x % Dv);
    for (int x = threadIdx.x; x < C; x += blockDim.x) dgc[x] = 0.f;
    load_chunk(G, q, k, g, beta, b, h, t0, L, Qs, Ks, gc, bt, eb, ee);  // barrier: S0, dO, dS visible too
    build_rhs(G, v, b, h, t0, L, S0, Ks, gc, bt, eb, Ak, Us, Vt);
    forward_solve(G, L, Ak, bt, Us);
    const float bl = eb[L - 1];
    // P_rs (s <= r) into dA, dP_rs = dO_r . u_s (s <= r).
    for (int x = threadIdx.x; x < L * C; x += blockDim.x) {
      const int r = x / C, s = x % C;
      float p = 0.f, d = 0.f;
      if (s <= r) {
        const float* qr = Qs + r * kp;
        const float* ks = Ks + s * kp;
        for (int i = 0; i < Dk; ++i) p += qr[i] * ks[i];
        p *= expf(gc[r] - gc[s]);
        for (int j = 0; j < Dv; ++j) d += dO[r * vp + j] * Us[s * vp + j];
      }
      dA[r * cp + s] = p;
      dP[r * cp + s] = d;
    }
    __syncthreads();
    // dU_rj = e_r (dS^T k_r)_j + sum_{s>=r} P_sr dO_sj
    for (int x = threadIdx.x; x < L * Dv; x += blockDim.x) {
      const int r = x / Dv, j = x % Dv;
      const float* kr = Ks + r * kp;
      float w = 0.f;
      for (int i = 0; i < Dk; ++i) w += dS[i * sp + j] * kr[i];
      float acc = ee[r] * w;
      for (int s = r; s < L; ++s) acc += dA[s * cp + r] * dO[s * vp + j];
      dU[r * vp + j] = acc;
    }
    // Per row r (one warp each): the state-update and output terms of dgc, x_r.
    for (int r = warp; r < L; r += kWarps) {
      const float* kr = Ks + r * kp;
      const float* qr = Qs + r * kp;
      const float* ur = Us + r * vp;
      const float* dor = dO + r * vp;
      float a = 0.f, bq = 0.f;
      for (int x = lane; x < SS; x += 32) {
        const int i = x / Dv, j = x % Dv;
        a += kr[i] * dS[i * sp + j] * ur[j];
        bq += qr[i] * S0[i * sp + j] * dor[j];
      }
      a = warp_sum(a);
      bq = warp_sum(bq);
      float pp = 0.f;
      for (int s = lane; s < L; s += 32) {
        if (s <= r) pp += dP[r * cp + s] * dA[r * cp + s];
        if (s >= r) pp -= dP[s * cp + r] * dA[s * cp + r];
      }
      pp = warp_sum(pp);
      if (lane == 0) {
        const float x = ee[r] * a;
        xs[r] = x;
        dgc[r] += -x + eb[r] * bq + pp;
      }
    }
    float sd = 0.f;
    for (int x = threadIdx.x; x < SS; x += blockDim.x) sd += S0[st_at(G, x)] * dS[st_at(G, x)];
    sd = block_sum(sd, red);  // barrier: dU, xs, dgc complete
    // dR = (I + A)^{-T} dU in place, A_sr = beta_s Ak_sr: one column per thread.
    for (int j = threadIdx.x; j < Dv; j += blockDim.x)
      for (int r = L - 2; r >= 0; --r) {
        float acc = 0.f;
        for (int s = r + 1; s < L; ++s) acc += bt[s] * Ak[s * cp + r] * dU[s * vp + j];
        dU[r * vp + j] -= acc;
      }
    __syncthreads();
    // dA_rs = -dR_r . u_s (s < r).
    for (int x = threadIdx.x; x < L * C; x += blockDim.x) {
      const int r = x / C, s = x % C;
      float d = 0.f;
      if (s < r)
        for (int j = 0; j < Dv; ++j) d -= dU[r * vp + j] * Us[s * vp + j];
      dA[r * cp + s] = d;
    }
    __syncthreads();
    // Per row r: dbeta_r, the solve and vt terms of dgc.
    for (int r = warp; r < L; r += kWarps) {
      const float* kr = Ks + r * kp;
      const float* dr = dU + r * vp;
      float kv = 0.f, rv = 0.f, aa = 0.f, ab = 0.f;
      for (int x = lane; x < SS; x += 32) kv += kr[x / Dv] * S0[st_at(G, x)] * dr[x % Dv];
      for (int j = lane; j < Dv; j += 32) rv += dr[j] * Vt[r * vp + j];
      for (int s = lane; s < L; s += 32) {
        if (s < r) aa += dA[r * cp + s] * Ak[r * cp + s];
        if (s > r) ab += dA[s * cp + r] * bt[s] * Ak[s * cp + r];
      }
      kv = warp_sum(kv);
      rv = warp_sum(rv);
      aa = warp_sum(aa);
      ab = warp_sum(ab);
      if (lane == 0) {
        dbt[r] = aa + rv;
        dgc[r] += bt[r] * aa - ab - eb[r] * bt[r] * kv;
      }
    }
    __syncthreads();
    // dgc of the last row, then dg = reverse cumsum; dbeta.
    if (threadIdx.x == 0) {
      float tot = bl * sd;
      for (int r = 0; r < L; ++r) tot += xs[r];
      dgc[L - 1] += tot;
      float acc = 0.f;
      for (int r = L - 1; r >= 0; --r) {
        acc += dgc[r];
        const int64_t row = row_of(G, b, t0 + r, h);
        dg[row] = acc;
        dbeta[row] = dbt[r];
      }
    }
    // Fold the decays into the matrices: dP_rs *= Gamma_rs (s <= r), dA_rs *= beta_r Gamma_rs (s < r).
    for (int x = threadIdx.x; x < L * C; x += blockDim.x) {
      const int r = x / C, s = x % C;
      if (s <= r) {
        const float gm = expf(gc[r] - gc[s]);
        dP[r * cp + s] *= gm;
        dA[r * cp + s] *= bt[r] * gm;
      }
    }
    __syncthreads();
    // dq_ri = b_r (S0 dO_r)_i + sum_{s<=r} dP_rs k_si
    // dk_ri = e_r (dS u_r)_i + sum_{s>=r} dP_sr q_si - b_r beta_r (S0 dR_r)_i + sum_{s<r} dA_rs k_si
    //         + sum_{s>r} dA_sr k_si
    for (int x = threadIdx.x; x < L * Dk; x += blockDim.x) {
      const int r = x / Dk, i = x % Dk;
      const float* srow = S0 + i * sp;
      const float* dsrow = dS + i * sp;
      float so = 0.f, su = 0.f, sr = 0.f;
      for (int j = 0; j < Dv; ++j) {
        so += srow[j] * dO[r * vp + j];
        su += dsrow[j] * Us[r * vp + j];
        sr += srow[j] * dU[r * vp + j];
      }
      const float br = eb[r];
      float aq = br * so, ak = ee[r] * su - br * bt[r] * sr;
      for (int s = 0; s <= r; ++s) aq += dP[r * cp + s] * Ks[s * kp + i];
      for (int s = r; s < L; ++s) ak += dP[s * cp + r] * Qs[s * kp + i];
      for (int s = 0; s < r; ++s) ak += dA[r * cp + s] * Ks[s * kp + i];
      for (int s = r + 1; s < L; ++s) ak += dA[s * cp + r] * Ks[s * kp + i];
      const int64_t off = row_of(G, b, t0 + r, h) * Dk + i;
      store1(dq, off, aq);
      store1(dk, off, ak);
    }
    for (int x = threadIdx.x; x < L * Dv; x += blockDim.x) {
      const int r = x / Dv, j = x % Dv;
      store1(dv, row_of(G, b, t0 + r, h) * Dv + j, bt[r] * dU[r * vp + j]);
    }
    __syncthreads();
    // dS0 = b_L dS + sum_r b_r q_r dO_r^T - sum_r b_r beta_r k_r dR_r^T (in place: element-wise).
    for (int x = threadIdx.x; x < SS; x += blockDim.x) {
      const int i = x / Dv, j = x % Dv;
      float acc = bl * dS[i * sp + j];
      for (int r = 0; r < L; ++r)
        acc += eb[r] * (Qs[r * kp + i] * dO[r * vp + j] - bt[r] * Ks[r * kp + i] * dU[r * vp + j]);
      dS[i * sp + j] = acc;
    }
    __syncthreads();
  }
  if (dinit)
    for (int x = threadIdx.x; x < SS; x += blockDim.x) dinit[static_cast<int64_t>(bh) * SS + x] = dS[st_at(G, x)];
}

__global__ void __launch_bounds__(kThreads) gdn_recurrent_kernel(Geo G, DevPtr q, DevPtr k, DevPtr v, const float* g,
                                                                 const float* beta, float* state, DevPtr o) {
  extern __shared__ float sm[];
  const int SS = G.Dk * G.Dv;
  float* S = sm;
  float* ks = S + SS;
  float* qs = ks + G.Dk;
  float* us = qs + G.Dk;
  const int bh = blockIdx.x, b = bh / G.H, h = bh % G.H;
  float* st = state + static_cast<int64_t>(bh) * SS;
  for (int x = threadIdx.x; x < SS; x += blockDim.x) S[x] = st[x];
  for (int t = 0; t < G.T; ++t) {
    const int64_t row = row_of(G, b, t, h);
    for (int i = threadIdx.x; i < G.Dk; i += blockDim.x) {
      ks[i] = load1(k, row * G.Dk + i);
      qs[i] = load1(q, row * G.Dk + i);
    }
    __syncthreads();
    const float a = expf(g[row]), be = beta[row];
    // u = beta (v - alpha S^T k)
    for (int j = threadIdx.x; j < G.Dv; j += blockDim.x) {
      float w = 0.f;
      for (int i = 0; i < G.Dk; ++i) w += S[i * G.Dv + j] * ks[i];
      us[j] = be * (load1(v, row * G.Dv + j) - a * w);
    }
    __syncthreads();
    for (int x = threadIdx.x; x < SS; x += blockDim.x) S[x] = a * S[x] + ks[x / G.Dv] * us[x % G.Dv];
    __syncthreads();
    for (int j = threadIdx.x; j < G.Dv; j += blockDim.x) {
      float acc = 0.f;
      for (int i = 0; i < G.Dk; ++i) acc += S[i * G.Dv + j] * qs[i];
      store1(o, row * G.Dv + j, acc);
    }
    __syncthreads();
  }
  for (int x = threadIdx.x; x < SS; x += blockDim.x) st[x] = S[x];
}

// ---------------------------------------------------------------------------------------------------------
// Tensor-core kernels: one block of gdn_tc::kThreads per (batch, head). The forward's 101 KB of shared memory
// leave room for two blocks per SM (hence at most 128 registers); the backward's 204 KB for one.
__global__ void __launch_bounds__(gdn_tc::kThreads, 2) gdn_tc_fwd_kernel(gdn_tc::FwdArgs<gdn_tc::DevExec> a) {
  extern __shared__ float tc_smem[];
  gdn_tc::fwd_row<gdn_tc::DevExec>(a, *reinterpret_cast<gdn_tc::FwdSmem*>(tc_smem), static_cast<int>(blockIdx.x));
}
__global__ void __launch_bounds__(gdn_tc::kThreads, 1) gdn_tc_bwd_kernel(gdn_tc::BwdArgs<gdn_tc::DevExec> a) {
  extern __shared__ float tc_smem[];
  gdn_tc::bwd_row<gdn_tc::DevExec>(a, *reinterpret_cast<gdn_tc::BwdSmem*>(tc_smem), static_cast<int>(blockIdx.x));
}

// ---------------------------------------------------------------------------------------------------------
// Short convolution: z[t] = sum_j w[c,j] x[t-K+1+j] ; y = SiLU(z) or z.
__device__ __forceinline__ float conv_z(DevPtr x, const float* w, int64_t rowbase, int t, int C, int c, int K) {
  float z = 0.f;
  for (int j = 0; j < K; ++j) {
    const int ts = t - K + 1 + j;
    if (ts >= 0) z += w[c * K + j] * load1(x, (rowbase + ts) * C + c);
  }
  return z;
}
__device__ __forceinline__ float conv_dz(DevPtr x, const float* w, DevPtr dy, int64_t rowbase, int t, int C, int c,
                                         int K, bool silu) {
  float d = load1(dy, (rowbase + t) * C + c);
  if (silu) {
    const float z = conv_z(x, w, rowbase, t, C, c, K);
    const float sg = 1.f / (1.f + expf(-z));
    d *= sg * (1.f + z * (1.f - sg));
  }
  return d;
}

__global__ void conv_fwd_kernel(DevPtr x, const float* w, DevPtr y, int64_t n, int T, int C, int K, bool silu) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % C);
    const int64_t bt = e / C;
    const int t = static_cast<int>(bt % T);
    const float z = conv_z(x, w, bt - t, t, C, c, K);
    store1(y, e, silu ? z / (1.f + expf(-z)) : z);
  }
}

__global__ void conv_dx_kernel(DevPtr x, const float* w, DevPtr dy, DevPtr dx, int64_t n, int T, int C, int K,
                               bool silu) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % C);
    const int64_t bt = e / C;
    const int t = static_cast<int>(bt % T);
    float s = 0.f;
    for (int j = 0; j < K; ++j) {
      const int to = t + K - 1 - j;
      if (to < T) s += w[c * K + j] * conv_dz(x, w, dy, bt - t, to, C, c, K, silu);
    }
    store1(dx, e, s);
  }
}

constexpr int kConvMaxK = 16;
constexpr int kConvRows = 64;  // (b, t) rows per thread of the dw kernel

// dw: thread = (channel, a run of kConvRows rows); partial sums added atomically.
__global__ void conv_dw_kernel(DevPtr x, const float* w, DevPtr dy, float* dw, int64_t rows, int T, int C, int K,
                               bool silu) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc[kConvMaxK];
  for (int j = 0; j < kConvMaxK; ++j) acc[j] = 0.f;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kConvRows;
  const int64_t r1 = r0 + kConvRows < rows ? r0 + kConvRows : rows;
  for (int64_t bt = r0; bt < r1; ++bt) {
    const int t = static_cast<int>(bt % T);
    const float d = conv_dz(x, w, dy, bt - t, t, C, c, K, silu);
    for (int j = 0; j < K; ++j) {
      const int ts = t - K + 1 + j;
      if (ts >= 0) acc[j] += d * load1(x, (bt - t + ts) * C + c);
    }
  }
  for (int j = 0; j < K; ++j) atomicAdd(dw + c * K + j, acc[j]);
}

// Streaming short convolution for a kernel size known at compile time: a thread owns one channel c of one
// sequence b over a run of kConvRun positions and slides a K-wide register window along t, so each x and dy
// element is read about once per run (the generic kernels above re-read K (forward) or K*K (backward)
// neighbours per output). Adjacent threads take adjacent channels: the loads of a warp are contiguous.
constexpr int kConvRun = 64;

// PGOLF_SHORT_CONV=generic keeps the per-element kernels (the parity selftest compares both against the CPU).
bool conv_run_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("PGOLF_SHORT_CONV");
    return !(v && std::strcmp(v, "generic") == 0);
  }();
  return on && !short_conv_generic_forced();
}

template <int K>
__global__ void conv_fwd_run_kernel(DevPtr x, const float* w, DevPtr y, int T, int C, bool silu) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int t0 = blockIdx.y * kConvRun, t1 = min(t0 + kConvRun, T);
  const int64_t base = static_cast<int64_t>(blockIdx.z) * T;
  float wk[K], xw[K];  // xw[i] = x[p - K + 1 + i] once p's element is shifted in (zero before t = 0)
#pragma unroll
  for (int j = 0; j < K; ++j) {
    wk[j] = w[c * K + j];
    const int ts = t0 - K + j;
    xw[j] = ts >= 0 ? load1(x, (base + ts) * C + c) : 0.f;
  }
  for (int p = t0; p < t1; ++p) {
#pragma unroll
    for (int j = 0; j + 1 < K; ++j) xw[j] = xw[j + 1];
    xw[K - 1] = load1(x, (base + p) * C + c);
    float z = 0.f;
#pragma unroll
    for (int j = 0; j < K; ++j) z += wk[j] * xw[j];
    store1(y, (base + p) * C + c, silu ? z / (1.f + expf(-z)) : z);
  }
}

// Backward of the same: dz[p] = dy[p] SiLU'(z[p]) is produced once per position p of [t0, t1 + K - 1) (zero past
// T); dx[t] = sum_j w[j] dz[t + K - 1 - j] is complete as soon as dz[t + K - 1] is, and dw[j] += dz[p] x[p - K + 1 + j]
// over the run's own positions. dw partials are added atomically per thread (as the generic kernel does).
template <int K>
__global__ void conv_bwd_run_kernel(DevPtr x, const float* w, DevPtr dy, DevPtr dx, float* dw, int T, int C,
                                    bool silu) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int t0 = blockIdx.y * kConvRun, t1 = min(t0 + kConvRun, T);
  const int64_t base = static_cast<int64_t>(blockIdx.z) * T;
  float wk[K], xw[K], dzw[K], acc[K];  // dzw[i] = dz[p - K + 1 + i]
#pragma unroll
  for (int j = 0; j < K; ++j) {
    wk[j] = w[c * K + j];
    const int ts = t0 - K + j;
    xw[j] = ts >= 0 ? load1(x, (base + ts) * C + c) : 0.f;
    dzw[j] = 0.f, acc[j] = 0.f;
  }
  for (int p = t0; p < t1 + K - 1; ++p) {
    float d = 0.f;
#pragma unroll
    for (int j = 0; j + 1 < K; ++j) xw[j] = xw[j + 1], dzw[j] = dzw[j + 1];
    if (p < T) {
      xw[K - 1] = load1(x, (base + p) * C + c);
      d = load1(dy, (base + p) * C + c);
      if (silu) {
        float z = 0.f;
#pragma unroll
        for (int j = 0; j < K; ++j) z += wk[j] * xw[j];
        const float sg = 1.f / (1.f + expf(-z));
        d *= sg * (1.f + z * (1.f - sg));
      }
    } else {
      xw[K - 1] = 0.f;
    }
    dzw[K - 1] = d;
    if (p < t1) {
#pragma unroll
      for (int j = 0; j < K; ++j) acc[j] += d * xw[j];
    }
    const int t = p - K + 1;
    if (t >= t0 && t < t1) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < K; ++j) s += wk[j] * dzw[K - 1 - j];
      store1(dx, (base + t) * C + c, s);
    }
  }
#pragma unroll
  for (int j = 0; j < K; ++j) atomicAdd(dw + c * K + j, acc[j]);
}

// Launches the streaming kernels for K in 1..8 (true), else returns false (the generic kernels run).
bool conv_run_launch(const char* op, DevPtr x, const float* w, DevPtr y_or_dy, DevPtr dx, float* dw, int64_t B,
                     int T, int C, int K, bool silu, bool backward) {
  if (B > 65535 || (T + kConvRun - 1) / kConvRun > 65535) return false;
  const dim3 grid(static_cast<unsigned>((C + 127) / 128), static_cast<unsigned>((T + kConvRun - 1) / kConvRun),
                  static_cast<unsigned>(B));
  auto go = [&](auto kc) {
    constexpr int kK = decltype(kc)::value;
    if (backward)
      conv_bwd_run_kernel<kK><<<grid, 128, 0, stream()>>>(x, w, y_or_dy, dx, dw, T, C, silu);
    else
      conv_fwd_run_kernel<kK><<<grid, 128, 0, stream()>>>(x, w, y_or_dy, T, C, silu);
    PG_CUDA_LAUNCH_CHECK(op);
  };
  switch (K) {
    case 1: go(std::integral_constant<int, 1>{}); return true;
    case 2: go(std::integral_constant<int, 2>{}); return true;
    case 3: go(std::integral_constant<int, 3>{}); return true;
    case 4: go(std::integral_constant<int, 4>{}); return true;
    case 5: go(std::integral_constant<int, 5>{}); return true;
    case 6: go(std::integral_constant<int, 6>{}); return true;
    case 7: go(std::integral_constant<int, 7>{}); return true;
    case 8: go(std::integral_constant<int, 8>{}); return true;
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Gates: g = -exp(A_log) softplus(a + dt_bias), beta = scale sigmoid(bb). The backward's per-head sums go
// through shared memory (H <= kGateMaxH), then one global atomicAdd per block and head.
constexpr int kGateMaxH = 1024;

__device__ __forceinline__ float softplus_f(float z) { return z > 20.f ? z : log1pf(expf(z)); }
__device__ __forceinline__ float sigmoid_f(float z) { return 1.f / (1.f + expf(-z)); }

__global__ void gates_fwd_kernel(DevPtr a, DevPtr bb, const float* A_log, const float* dt_bias, float* g, float* beta,
                                 int64_t rows, int H, float scale) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const int h = static_cast<int>(r % H);
    g[r] = -expf(A_log[h]) * softplus_f(load1(a, r) + dt_bias[h]);
    beta[r] = scale * sigmoid_f(load1(bb, r));
  }
}

__global__ void gates_bwd_kernel(DevPtr a, DevPtr bb, const float* A_log, const float* dt_bias, const float* dg,
                                 const float* dbeta, DevPtr da, DevPtr dbb, float* dA_log, float* ddt_bias,
                                 int64_t rows, int H, float scale) {
  extern __shared__ float part[];  // 2H: dA_log partials, then ddt_bias partials
  for (int h = threadIdx.x; h < 2 * H; h += blockDim.x) part[h] = 0.f;
  __syncthreads();
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const int h = static_cast<int>(r % H);
    const float ea = expf(A_log[h]), z = load1(a, r) + dt_bias[h], d = -dg[r] * ea * sigmoid_f(z);
    store1(da, r, d);
    atomicAdd(part + h, dg[r] * (-ea * softplus_f(z)));
    atomicAdd(part + H + h, d);
    const float s = sigmoid_f(load1(bb, r));
    store1(dbb, r, dbeta[r] * scale * s * (1.f - s));
  }
  __syncthreads();
  for (int h = threadIdx.x; h < H; h += blockDim.x) {
    atomicAdd(dA_log + h, part[h]);
    atomicAdd(ddt_bias + h, part[H + h]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The padded shared-memory layout (see the top of the file) unless PGOLF_GDN_UNPADDED=1; read once per process.
bool padded_layout() {
  static const bool padded = [] {
    const char* v = std::getenv("PGOLF_GDN_UNPADDED");
    return !(v && std::strcmp(v, "1") == 0);
  }();
  return padded;
}

Geo geo_of(const Tensor& q, const Tensor& v, int chunk) {
  Geo G{static_cast<int>(q.dim(0)),
        static_cast<int>(q.dim(1)),
        static_cast<int>(q.dim(2)),
        static_cast<int>(q.dim(3)),
        static_cast<int>(v.dim(3)),
        chunk,
        0,
        0,
        0,
        0,
        0};
  G.NC = static_cast<int>(gdn_num_chunks(G.T, chunk));
  const int pad = padded_layout() ? 1 : 0;
  G.kp = G.Dk + pad;
  G.vp = G.Dv + pad;
  G.sp = G.Dv + pad;
  G.cp = G.C + pad;
  return G;
}

int max_smem_optin() {
  int dev = 0, v = 0;
  PG_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  PG_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  return v;
}

// Checks the kernel's shared memory against the device; the first call per Kernel and process (a thread-safe
// static) raises the kernel's dynamic shared memory limit to the device's opt-in maximum. That is not a stream
// operation, and later calls (e.g. under graph capture) do nothing but the check.
template <auto Kernel>
void prepare(const char* op, size_t floats, const Geo& G) {
  static const int limit = max_smem_optin();  // one device per process
  const size_t bytes = floats * sizeof(float);
  PG_CHECK(bytes <= static_cast<size_t>(limit),
           "{}: Dk {} x Dv {} with chunk {} needs {} bytes of shared memory per block, the device has {}: use a "
           "smaller chunk",
           op, G.Dk, G.Dv, G.C, bytes, limit);
  static const bool raised = [&] {
    PG_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit), op);
    return true;
  }();
  (void)raised;
}

const float* fptr(const Tensor& t) { return t.defined() ? t.ptr<float>() : nullptr; }
float* fptr_mut(const Tensor& t) { return t.defined() ? t.ptr<float>() : nullptr; }

// PGOLF_GDN_KERNEL=loop|tc, read once per process (Auto when unset).
GdnKernel env_gdn_kernel() {
  static const GdnKernel k = [] {
    const char* v = std::getenv("PGOLF_GDN_KERNEL");
    if (!v || !*v) return GdnKernel::Auto;
    if (!std::strcmp(v, "loop")) return GdnKernel::Loop;
    if (!std::strcmp(v, "tc")) return GdnKernel::Tc;
    PG_CHECK(false, "PGOLF_GDN_KERNEL={}: expected loop or tc", v);
    return GdnKernel::Auto;
  }();
  return k;
}

// The tensor-core kernels when the choice (set_gdn_kernel, else the environment, else Auto: bf16 q, k, v) asks
// for them and they can run: Dk = Dv = chunk = 64 and 16-byte aligned activations (their 8-wide loads).
bool use_tc(const Geo& G, std::initializer_list<const Tensor*> acts) {
  GdnKernel k = gdn_kernel_override();
  if (k == GdnKernel::Auto) k = env_gdn_kernel();
  if (k == GdnKernel::Loop) return false;
  if (G.Dk != gdn_tc::kC || G.Dv != gdn_tc::kC || G.C != gdn_tc::kC) return false;
  bool all_bf16 = true;
  for (const Tensor* t : acts) {
    if (!t->defined()) continue;
    if (!aligned16(t->data())) return false;
    all_bf16 = all_bf16 && t->dtype() == DType::BF16;
  }
  return k == GdnKernel::Tc || all_bf16;
}

}  // namespace

void gdn_chunk_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                       const Tensor& init, const Tensor& o, const Tensor& states, const Tensor& final_state,
                       int chunk) {
  const char* op = "gdn_chunk_forward";
  const Geo G = geo_of(q, v, chunk);
  if (G.B * G.H == 0) return;
  if (G.T == 0) {
    if (final_state.defined() && final_state.data() != init.data()) {
      if (init.defined())
        PG_CUDA_CHECK(
            cudaMemcpyAsync(final_state.data(), init.data(), init.nbytes(), cudaMemcpyDeviceToDevice, stream()), op);
      else
        PG_CUDA_CHECK(cudaMemsetAsync(final_state.data(), 0, final_state.nbytes(), stream()), op);
    }
    return;
  }
  if (use_tc(G, {&q, &k, &v, &o})) {
    prepare<gdn_tc_fwd_kernel>(op, sizeof(gdn_tc::FwdSmem) / sizeof(float), G);
    const gdn_tc::FwdArgs<gdn_tc::DevExec> a{G.B, G.T, G.H, G.NC, dev_ptr(op, "q", q), dev_ptr(op, "k", k),
                                              dev_ptr(op, "v", v), dev_ptr(op, "o", o), g.ptr<float>(),
                                              beta.ptr<float>(), fptr(init), fptr_mut(states), fptr_mut(final_state)};
    gdn_tc_fwd_kernel<<<G.B * G.H, gdn_tc::kThreads, sizeof(gdn_tc::FwdSmem), stream()>>>(a);
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const size_t floats = fwd_smem_floats(G);
  prepare<gdn_fwd_kernel>(op, floats, G);
  gdn_fwd_kernel<<<G.B * G.H, kThreads, floats * sizeof(float), stream()>>>(
      G, dev_ptr(op, "q", q), dev_ptr(op, "k", k), dev_ptr(op, "v", v), g.ptr<float>(), beta.ptr<float>(), fptr(init),
      dev_ptr(op, "o", o), fptr_mut(states), fptr_mut(final_state));
  PG_CUDA_LAUNCH_CHECK(op);
}

void gdn_chunk_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                        const Tensor& states, const Tensor& dout, const Tensor& dfinal, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const Tensor& dg, const Tensor& dbeta, const Tensor& dinit,
                        int chunk) {
  const char* op = "gdn_chunk_backward";
  const Geo G = geo_of(q, v, chunk);
  if (G.B * G.H == 0) return;
  if (G.T == 0) {
    if (dinit.defined()) {
      if (dfinal.defined())
        PG_CUDA_CHECK(cudaMemcpyAsync(dinit.data(), dfinal.data(), dfinal.nbytes(), cudaMemcpyDeviceToDevice, stream()),
                      op);
      else
        PG_CUDA_CHECK(cudaMemsetAsync(dinit.data(), 0, dinit.nbytes(), stream()), op);
    }
    return;
  }
  if (use_tc(G, {&q, &k, &v, &dout, &dq, &dk, &dv})) {
    prepare<gdn_tc_bwd_kernel>(op, sizeof(gdn_tc::BwdSmem) / sizeof(float), G);
    const gdn_tc::BwdArgs<gdn_tc::DevExec> a{
        G.B,          G.T,          G.H,         G.NC,          dev_ptr(op, "q", q),  dev_ptr(op, "k", k),
        dev_ptr(op, "v", v),        dev_ptr(op, "dout", dout),  dev_ptr(op, "dq", dq), dev_ptr(op, "dk", dk),
        dev_ptr(op, "dv", dv),      g.ptr<float>(),             beta.ptr<float>(),    states.ptr<float>(),
        fptr(dfinal), fptr_mut(dg), fptr_mut(dbeta), fptr_mut(dinit)};
    gdn_tc_bwd_kernel<<<G.B * G.H, gdn_tc::kThreads, sizeof(gdn_tc::BwdSmem), stream()>>>(a);
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const size_t floats = bwd_smem_floats(G);
  prepare<gdn_bwd_kernel>(op, floats, G);
  gdn_bwd_kernel<<<G.B * G.H, kThreads, floats * sizeof(float), stream()>>>(
      G, dev_ptr(op, "q", q), dev_ptr(op, "k", k), dev_ptr(op, "v", v), g.ptr<float>(), beta.ptr<float>(),
      states.ptr<float>(), dev_ptr(op, "dout", dout), fptr(dfinal), dev_ptr(op, "dq", dq), dev_ptr(op, "dk", dk),
      dev_ptr(op, "dv", dv), fptr_mut(dg), fptr_mut(dbeta), fptr_mut(dinit));
  PG_CUDA_LAUNCH_CHECK(op);
}

void gdn_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                           const Tensor& state, const Tensor& o) {
  const char* op = "gdn_recurrent_forward";
  const Geo G = geo_of(q, v, kGdnChunk);
  if (G.B * G.H == 0 || G.T == 0) return;
  const size_t floats = size_t(G.Dk) * G.Dv + 2 * size_t(G.Dk) + size_t(G.Dv);
  prepare<gdn_recurrent_kernel>(op, floats, G);
  gdn_recurrent_kernel<<<G.B * G.H, kThreads, floats * sizeof(float), stream()>>>(
      G, dev_ptr(op, "q", q), dev_ptr(op, "k", k), dev_ptr(op, "v", v), g.ptr<float>(), beta.ptr<float>(),
      fptr_mut(state), dev_ptr(op, "o", o));
  PG_CUDA_LAUNCH_CHECK(op);
}

void gdn_gates_forward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& g,
                       const Tensor& beta, float beta_scale) {
  const char* op = "gdn_gates_forward";
  const int64_t rows = a.numel();
  if (rows == 0) return;
  gates_fwd_kernel<<<grid_for(rows, 256), 256, 0, stream()>>>(
      dev_ptr(op, "a", a), dev_ptr(op, "bb", bb), A_log.ptr<float>(), dt_bias.ptr<float>(), g.ptr<float>(),
      beta.ptr<float>(), rows, static_cast<int>(a.dim(2)), beta_scale);
  PG_CUDA_LAUNCH_CHECK(op);
}

void gdn_gates_backward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& dg,
                        const Tensor& dbeta, const Tensor& da, const Tensor& dbb, const Tensor& dA_log,
                        const Tensor& ddt_bias, float beta_scale) {
  const char* op = "gdn_gates_backward";
  const int64_t rows = a.numel();
  const int H = static_cast<int>(a.dim(2));
  if (rows == 0) return;
  PG_CHECK(H <= kGateMaxH, "{}: {} heads exceed the kernel's {}", op, H, kGateMaxH);
  gates_bwd_kernel<<<grid_for(rows, 256, 1024), 256, 2 * H * sizeof(float), stream()>>>(
      dev_ptr(op, "a", a), dev_ptr(op, "bb", bb), A_log.ptr<float>(), dt_bias.ptr<float>(), dg.ptr<float>(),
      dbeta.ptr<float>(), dev_ptr(op, "da", da), dev_ptr(op, "dbb", dbb), dA_log.ptr<float>(), ddt_bias.ptr<float>(),
      rows, H, beta_scale);
  PG_CUDA_LAUNCH_CHECK(op);
}

void short_conv_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool silu) {
  const char* op = "short_conv_forward";
  const int64_t n = x.numel();
  if (n == 0) return;
  if (conv_run_enabled() &&
      conv_run_launch(op, dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "y", y), DevPtr{}, nullptr, x.dim(0),
                      static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), static_cast<int>(w.dim(1)), silu, false))
    return;
  conv_fwd_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "y", y), n,
                                                          static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)),
                                                          static_cast<int>(w.dim(1)), silu);
  PG_CUDA_LAUNCH_CHECK(op);
}

void short_conv_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                         bool silu) {
  const char* op = "short_conv_backward";
  const int64_t n = x.numel();
  if (n == 0) return;
  const int T = static_cast<int>(x.dim(1)), C = static_cast<int>(x.dim(2)), K = static_cast<int>(w.dim(1));
  if (conv_run_enabled() && conv_run_launch(op, dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "dy", dy),
                                             dev_ptr(op, "dx", dx), fptr_mut(dw), x.dim(0), T, C, K, silu, true))
    return;
  PG_CHECK(K <= kConvMaxK, "{}: kernel size {} exceeds the kernel's {}", op, K, kConvMaxK);
  conv_dx_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "dy", dy),
                                                         dev_ptr(op, "dx", dx), n, T, C, K, silu);
  PG_CUDA_LAUNCH_CHECK(op);
  const int64_t rows = x.dim(0) * x.dim(1);
  const int64_t ry = (rows + kConvRows - 1) / kConvRows;
  PG_CHECK(ry <= 65535, "{}: {} rows exceed the dw kernel's grid", op, rows);
  const dim3 grid(static_cast<unsigned>((C + 127) / 128), static_cast<unsigned>(ry));
  conv_dw_kernel<<<grid, 128, 0, stream()>>>(dev_ptr(op, "x", x), w.ptr<float>(), dev_ptr(op, "dy", dy), fptr_mut(dw),
                                             rows, T, C, K, silu);
  PG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace pgolf::ops::cuda
