#pragma once
// The tensor-core chunked backward of the gated delta rule for one (batch, head) row (docs/GDN.md "The
// backward", "GPU kernels"), written against an execution policy (gdn_tc.cuh). Chunks in reverse, with dS the
// gradient of the chunk's end state in shared memory (dfinal or 0 at the start):
//   A  load S0 = states[c], Q, K, dO, beta ; gc = cumsum(g) ; zero the partial sums ;
//      write dg, dbeta of the chunk before (flush)                                       | barrier
//   C  eb, ee ; sum(S0 o dS) per warp ; Vt, R -> U, Ak, P (as the forward)               | barrier
//   D  diagonal inverses | E  forward solve: U                                           | barriers
//   F  dU = diag(ee) K dS + P^T dO ; dP = dO U^T -> dP o Gamma                           | barrier
//   G  dR = (I + A)^-T dU (blocked back substitution, per warp) ; dv = diag(beta) dR     | barrier
//   H  dA = -dR U^T -> Y = dA o beta_r Gamma                                             | barrier
//   J  dq = diag(b) dO S0^T + dPg K
//      dk = -diag(b beta) dR S0^T + diag(ee) U dS^T + dPg^T Q + Y K + Y^T K            | barrier
//   K  dS <- b_L dS + Q^T diag(b) dO - K^T diag(b beta) dR (in place, per warp tile) ;
//      dgc_r, dbeta_r from the partial sums                                              | barrier
// The log-decay gradient has terms from every stage (docs/GDN.md "decays"); each warp writes its partial row or
// column sums to its own slot and phase K adds the slots in a fixed order, so the result is deterministic.
#include "ops/gdn_tc.cuh"

namespace pgolf::ops::gdn_tc {

// Partial-sum slots (each 64 floats, one per chunk row).
constexpr int kRowDQ = 0, kRowDK = 2, kRowDP = 4, kRowSlots = 6;  // added to dgc_r: (c), (f), (d) rows
constexpr int kColDP = 0, kColDA = 4, kColSlots = 8;              // subtracted from dgc_s: (d), (e) columns
constexpr int kBetaDA = 0, kBetaVt = 2, kBetaSlots = 10;          // dbeta_r: sum dA Ak (e) ; dR . Vt (g)

struct BwdSmem {
  float S0[kTileFloats], dS[kTileFloats], Q[kTileFloats], K[kTileFloats], Vt[kTileFloats], U[kTileFloats];
  float dO[kTileFloats], dU[kTileFloats], Ak[kTileFloats], P[kTileFloats], dP[kTileFloats], dA[kTileFloats];
  float Tc[16 * 64];
  float gc[kC], bt[kC], eb[kC], ee[kC];
  float dgr[kRowSlots][kC], dgcol[kColSlots][kC], dbr[kBetaSlots][kC];
  float xr[2][kC];  // x_r = ee_r k_r^T dS u_r by column half: -x_r to dgc_r, sum_r x_r to dgc_{L-1}
  float dgv[kC], dbv[kC];  // the finished chunk's dgc and dbeta, written out at the next phase A
  float red[kWarps];       // sum(S0 o dS) per warp
  float tot[4];            // [0]: what dgc_{L-1} gets besides its row sums
};

template <class X>
struct BwdArgs {
  int64_t B, T, H;
  int NC;
  typename X::Ptr q, k, v, dout, dq, dk, dv;
  const float *g, *beta, *states, *dfin;  // dfin may be null (0)
  float *dg, *dbeta, *dinit;              // dinit may be null
};

// dg = reverse cumsum of dgc over the chunk (plus the extra term of its last row), dbeta as summed.
template <class X>
PG_GDN_FN void flush_gates(const BwdArgs<X>& a, const BwdSmem& sm, const Rows& rows, int L) {
  X::single([&] {
    float acc = sm.tot[0];
    for (int r = L - 1; r >= 0; --r) {
      acc += sm.dgv[r];
      a.dg[rows.row(r)] = acc;
      a.dbeta[rows.row(r)] = sm.dbv[r];
    }
  });
}

template <class X>
PG_GDN_FN void bwd_row(const BwdArgs<X>& a, BwdSmem& sm, int bh) {
  constexpr int64_t SS = kTileFloats;
  const Chunk ch{sm.S0, sm.Q, sm.K, sm.U, sm.Ak, sm.P, sm.Vt, sm.Tc, sm.gc, sm.bt, sm.eb, sm.ee};
  const int64_t b = bh / a.H, h = bh % a.H;
  load_state<X>(sm.dS, a.dfin ? a.dfin + bh * SS : nullptr);
  for (int c = a.NC - 1; c >= 0; --c) {
    const int t0 = c * kC, L = a.T - t0 < kC ? static_cast<int>(a.T - t0) : kC;
    const Rows rows{a.T, a.H, b, h, t0};
    // A
    if (c < a.NC - 1) {  // chunk c + 1 (the last one may be partial)
      const int L1 = a.T - t0 - kC < kC ? static_cast<int>(a.T - t0 - kC) : kC;
      flush_gates<X>(a, sm, Rows{a.T, a.H, b, h, t0 + kC}, L1);
    }
    load_state<X>(sm.S0, a.states + (static_cast<int64_t>(bh) * a.NC + c) * SS);
    load_tile<X>(sm.Q, a.q, rows, L);
    load_tile<X>(sm.K, a.k, rows, L);
    load_tile<X>(sm.dO, a.dout, rows, L);
    load_gates<X>(ch, a.g, a.beta, rows, L);
    X::for_threads((kRowSlots + kColSlots + kBetaSlots + 2) * kC, [&](int x) {
      float* p = x < kRowSlots * kC                ? &sm.dgr[0][0] + x
                 : x < (kRowSlots + kColSlots) * kC ? &sm.dgcol[0][0] + (x - kRowSlots * kC)
                 : x < (kRowSlots + kColSlots + kBetaSlots) * kC
                     ? &sm.dbr[0][0] + (x - (kRowSlots + kColSlots) * kC)
                     : &sm.xr[0][0] + (x - (kRowSlots + kColSlots + kBetaSlots) * kC);
      *p = 0.f;
    });
    X::sync();
    // C
    decays<X>(ch);
    X::for_warps([&](int w) {
      typename X::template R<1> s;
      zero<X, 1>(s);
      for (int lane : X::lanes())
        for (int i = 0; i < 16; ++i) {
          const int p = w * 512 + 32 * i + lane;  // same storage order in both tiles
          s[lane][0] += sm.S0[p] * sm.dS[p];
        }
      for (int m = 16; m > 0; m >>= 1) X::xor_sum(s, 0, m);
      for (int lane : X::lanes())
        if (lane == 0) sm.red[w] = s[lane][0];
    });
    chunk_products<X>(ch, a.v, rows, L);
    X::sync();
    // D, E
    diag_inverses<X>(ch);
    X::sync();
    forward_solve<X>(ch);
    X::sync();
    // F
    X::for_warps([&](int w) {
      typename X::template R<4 * kNT> acc;
      {  // dU_rj = ee_r (K dS)_rj + sum_{s>=r} P_sr dO_sj ; rows 16 mi.. with mi = 3 - w / 2 (the lighter jobs
         // go with the dP jobs below)
        const int mi = 3 - (w >> 1), m0 = 16 * mi, n0 = 32 * (w & 1);
        zero<X, 4 * kNT>(acc);
        warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.K[tile_at(m, k)]; },
                         [&](int k, int n) { return sm.dS[tile_at(k, n)]; });
        warp_row_sums<X, kNT>(
            acc, kNT, m0, n0, [&](int r, int cc, float v) { return sm.ee[r] * v * sm.U[tile_at(r, cc)]; },
            sm.xr[w & 1]);
        warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int, float& v0, float& v1) {
          v0 *= sm.ee[r], v1 *= sm.ee[r];
        });
        warp_mma<X, kNT>(acc, kNT, m0, n0, m0, kC, [&](int m, int k) { return sm.P[tile_at(k, m)]; },
                         [&](int k, int n) { return sm.dO[tile_at(k, n)]; });
        warp_store<X, kNT>(acc, kNT, m0, n0, sm.dU);
      }
      if (w < kTriJobs) {  // dP_rs = dO_r . u_s (s <= r): (d) terms, then dPg = dP o Gamma
        const int mi = tri_mi(w), m0 = 16 * mi, n0 = 32 * tri_half(w), ntc = tri_ntc(w);
        zero<X, 4 * kNT>(acc);
        warp_mma<X, kNT>(acc, ntc, m0, n0, 0, kC, [&](int m, int k) { return sm.dO[tile_at(m, k)]; },
                         [&](int k, int n) { return sm.U[tile_at(n, k)]; });
        auto x = [&](int r, int s, float v) { return s <= r ? v * sm.P[tile_at(r, s)] : 0.f; };
        warp_row_sums<X, kNT>(acc, ntc, m0, n0, x, sm.dgr[kRowDP + tri_half(w)]);
        warp_col_sums<X, kNT>(acc, ntc, m0, n0, x, sm.dgcol[kColDP + mi]);
        warp_pairs<X, kNT>(acc, ntc, m0, n0, [&](int, int r, int s, float& v0, float& v1) {
          const float y0 = s <= r ? X::exp(sm.gc[r] - sm.gc[s]) * v0 : 0.f;
          const float y1 = s + 1 <= r ? X::exp(sm.gc[r] - sm.gc[s + 1]) * v1 : 0.f;
          X::sts2(sm.dP + tile_at(r, s), y0, y1);
        });
      }
    });
    X::sync();
    // G: dR_I = Tinv_I^T (dU_I - sum_{J>I} A_JI^T dR_J), each warp its own 8 columns, in place in dU; then
    // dv = diag(beta) dR and the (g) terms dR_r . Vt_r.
    X::for_warps([&](int w) {
      const int n0 = 8 * w;
      auto Rb = [&](int k, int n) { return sm.dU[tile_at(k, n)]; };
      for (int I = 3; I >= 0; --I) {
        const int m0 = 16 * I;
        typename X::template R<4> acc;
        if (I < 3) {
          warp_load<X, 1>(acc, m0, n0, sm.dU, 1.f);
          warp_mma<X, 1>(acc, 1, m0, n0, m0 + 16, kC,
                         [&](int m, int k) { return -sm.bt[k] * sm.Ak[tile_at(k, m)]; }, Rb);
          warp_store<X, 1>(acc, 1, m0, n0, sm.dU);
          X::syncwarp();
        }
        zero<X, 4>(acc);
        warp_mma<X, 1>(acc, 1, m0, n0, m0, m0 + 16, [&](int m, int k) { return sm.Tc[tile_at(k - m0, m)]; }, Rb);
        X::syncwarp();
        warp_store<X, 1>(acc, 1, m0, n0, sm.dU);
        warp_pairs<X, 1>(acc, 1, m0, n0, [&](int, int r, int col, float& v0, float& v1) {
          if (r < L) X::st2(a.dv, rows(r) + col, sm.bt[r] * v0, sm.bt[r] * v1);
        });
        warp_row_sums<X, 1>(
            acc, 1, m0, n0, [&](int r, int col, float v) { return v * sm.Vt[tile_at(r, col)]; },
            sm.dbr[kBetaVt + w]);
        X::syncwarp();
      }
    });
    X::sync();
    // H: dA_rs = -dR_r . u_s (s < r): dbeta (e) += dA_rs Ak_rs, dgc (e) x = beta_r dA_rs Ak_rs, Y = dA beta_r Gamma
    X::for_warps([&](int w) {
      if (w >= kTriJobs) return;
      const int mi = tri_mi(w), m0 = 16 * mi, n0 = 32 * tri_half(w), ntc = tri_ntc(w);
      typename X::template R<4 * kNT> acc;
      zero<X, 4 * kNT>(acc);
      warp_mma<X, kNT>(acc, ntc, m0, n0, 0, kC, [&](int m, int k) { return -sm.dU[tile_at(m, k)]; },
                       [&](int k, int n) { return sm.U[tile_at(n, k)]; });
      warp_row_sums<X, kNT>(
          acc, ntc, m0, n0, [&](int r, int s, float v) { return s < r ? v * sm.Ak[tile_at(r, s)] : 0.f; },
          sm.dbr[kBetaDA + tri_half(w)]);
      warp_col_sums<X, kNT>(
          acc, ntc, m0, n0,
          [&](int r, int s, float v) { return s < r ? sm.bt[r] * v * sm.Ak[tile_at(r, s)] : 0.f; },
          sm.dgcol[kColDA + mi]);
      warp_pairs<X, kNT>(acc, ntc, m0, n0, [&](int, int r, int s, float& v0, float& v1) {
        const float y0 = s < r ? sm.bt[r] * X::exp(sm.gc[r] - sm.gc[s]) * v0 : 0.f;
        const float y1 = s + 1 < r ? sm.bt[r] * X::exp(sm.gc[r] - sm.gc[s + 1]) * v1 : 0.f;
        X::sts2(sm.dA + tile_at(r, s), y0, y1);
      });
    });
    X::sync();
    // J: warp w computes rows 16 (w / 2).., columns 32 (w % 2).. of both dq and dk.
    X::for_warps([&](int w) {
      const int mi = w >> 1, m0 = 16 * mi, n0 = 32 * (w & 1);
      auto S0T = [&](int k, int n) { return sm.S0[tile_at(n, k)]; };
      auto Kb = [&](int k, int n) { return sm.K[tile_at(k, n)]; };
      typename X::template R<4 * kNT> acc;
      // dq = diag(b) dO S0^T + dPg K ; (c): b_r q_r . (dO S0^T)_r
      zero<X, 4 * kNT>(acc);
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.dO[tile_at(m, k)]; }, S0T);
      warp_row_sums<X, kNT>(
          acc, kNT, m0, n0, [&](int r, int i, float v) { return sm.eb[r] * sm.Q[tile_at(r, i)] * v; },
          sm.dgr[kRowDQ + (w & 1)]);
      warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int, float& v0, float& v1) {
        v0 *= sm.eb[r], v1 *= sm.eb[r];
      });
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, m0 + 16, [&](int m, int k) { return sm.dP[tile_at(m, k)]; }, Kb);
      warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int i, float& v0, float& v1) {
        if (r < L) X::st2(a.dq, rows(r) + i, v0, v1);
      });
      // dk ; (f): -b_r beta_r k_r . (dR S0^T)_r
      zero<X, 4 * kNT>(acc);
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.dU[tile_at(m, k)]; }, S0T);
      warp_row_sums<X, kNT>(
          acc, kNT, m0, n0,
          [&](int r, int i, float v) { return -sm.eb[r] * sm.bt[r] * sm.K[tile_at(r, i)] * v; },
          sm.dgr[kRowDK + (w & 1)]);
      warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int, float& v0, float& v1) {
        const float f = -sm.eb[r] * sm.bt[r];
        v0 *= f, v1 *= f;
      });
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.ee[m] * sm.U[tile_at(m, k)]; },
                       [&](int k, int n) { return sm.dS[tile_at(n, k)]; });
      warp_mma<X, kNT>(acc, kNT, m0, n0, m0, kC, [&](int m, int k) { return sm.dP[tile_at(k, m)]; },
                       [&](int k, int n) { return sm.Q[tile_at(k, n)]; });
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, m0 + 16, [&](int m, int k) { return sm.dA[tile_at(m, k)]; }, Kb);
      warp_mma<X, kNT>(acc, kNT, m0, n0, m0, kC, [&](int m, int k) { return sm.dA[tile_at(k, m)]; }, Kb);
      warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int i, float& v0, float& v1) {
        if (r < L) X::st2(a.dk, rows(r) + i, v0, v1);
      });
    });
    X::sync();
    // K: dS0 (in place: each warp reads only its own tile of dS) ; this chunk's dgc and dbeta per row.
    X::for_warps([&](int w) {
      const int m0 = 16 * (w >> 1), n0 = 32 * (w & 1);
      typename X::template R<4 * kNT> acc;
      warp_load<X, kNT>(acc, m0, n0, sm.dS, sm.eb[kC - 1]);
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.eb[k] * sm.Q[tile_at(k, m)]; },
                       [&](int k, int n) { return sm.dO[tile_at(k, n)]; });
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC,
                       [&](int m, int k) { return -sm.eb[k] * sm.bt[k] * sm.K[tile_at(k, m)]; },
                       [&](int k, int n) { return sm.dU[tile_at(k, n)]; });
      warp_store<X, kNT>(acc, kNT, m0, n0, sm.dS);
    });
    X::for_threads(kC + 1, [&](int r) {
      if (r == kC) {  // dgc_{L-1} += b_L sum(S0 o dS) + sum_r x_r
        float t = 0.f;
        for (int w = 0; w < kWarps; ++w) t += sm.red[w];
        t *= sm.eb[kC - 1];
        for (int q = 0; q < kC; ++q) t += sm.xr[0][q] + sm.xr[1][q];
        sm.tot[0] = t;
        return;
      }
      float d = -(sm.xr[0][r] + sm.xr[1][r]);
      for (int s = 0; s < kRowSlots; ++s) d += sm.dgr[s][r];
      for (int s = 0; s < kColSlots; ++s) d -= sm.dgcol[s][r];
      d += sm.bt[r] * (sm.dbr[kBetaDA][r] + sm.dbr[kBetaDA + 1][r]);
      float db = 0.f;
      for (int s = 0; s < kBetaSlots; ++s) db += sm.dbr[s][r];
      sm.dgv[r] = d;
      sm.dbv[r] = db;
    });
    X::sync();
    if (c == 0) flush_gates<X>(a, sm, rows, L);
  }
  if (a.dinit) store_state<X>(a.dinit + bh * SS, sm.dS);
}

}  // namespace pgolf::ops::gdn_tc
