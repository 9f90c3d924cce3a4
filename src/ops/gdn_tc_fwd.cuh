#pragma once
// The tensor-core chunked forward of the gated delta rule for one (batch, head) row (docs/GDN.md "GPU
// kernels"), written against an execution policy (gdn_tc.cuh). Per chunk, with S the state in shared memory:
//   A  states[c] = S ; load Q, K, beta ; gc = cumsum(g)                               | barrier
//   C  eb, ee ; R = diag(beta)(V - diag(b) K S) -> U ; Ak, P (20 warp jobs)           | barrier
//   D  Tinv_I = (I + A_II)^-1 for the four diagonal 16 x 16 blocks                    | barrier
//   E  (I + A) U = R, blocked, each warp its own 8 columns                            | barrier
//   F  O = diag(b) Q S + P U -> o                                                     | barrier
//   G  S = b_L S + K^T diag(ee) U (in place: each warp reads and writes its own tile) | barrier
#include "ops/gdn_tc.cuh"

namespace pgolf::ops::gdn_tc {

struct FwdSmem {
  float S[kTileFloats], Q[kTileFloats], K[kTileFloats], U[kTileFloats], Ak[kTileFloats], P[kTileFloats];
  float Tc[16 * 64];
  float gc[kC], bt[kC], eb[kC], ee[kC];
};

template <class X>
struct FwdArgs {
  int64_t B, T, H;
  int NC;
  typename X::Ptr q, k, v, o;
  const float *g, *beta, *init;  // init may be null (zero state)
  float *states, *fin;           // either may be null (not written)
};

template <class X>
PG_GDN_FN void fwd_row(const FwdArgs<X>& a, FwdSmem& sm, int bh) {
  constexpr int64_t SS = kTileFloats;
  const Chunk ch{sm.S, sm.Q, sm.K, sm.U, sm.Ak, sm.P, nullptr, sm.Tc, sm.gc, sm.bt, sm.eb, sm.ee};
  load_state<X>(sm.S, a.init ? a.init + bh * SS : nullptr);
  X::sync();
  for (int c = 0; c < a.NC; ++c) {
    const int t0 = c * kC, L = a.T - t0 < kC ? static_cast<int>(a.T - t0) : kC;
    const Rows rows{a.T, a.H, bh / a.H, bh % a.H, t0};
    // A
    if (a.states) store_state<X>(a.states + (static_cast<int64_t>(bh) * a.NC + c) * SS, sm.S);
    load_tile<X>(sm.Q, a.q, rows, L);
    load_tile<X>(sm.K, a.k, rows, L);
    load_gates<X>(ch, a.g, a.beta, rows, L);
    X::sync();
    // C
    decays<X>(ch);
    chunk_products<X>(ch, a.v, rows, L);
    X::sync();
    // D, E
    diag_inverses<X>(ch);
    X::sync();
    forward_solve<X>(ch);
    X::sync();
    // F: o_r = b_r S^T q_r + sum_{s<=r} P_rs u_s ; warp w: rows 16 (w / 2).., columns 32 (w % 2)..
    X::for_warps([&](int w) {
      const int m0 = 16 * (w >> 1), n0 = 32 * (w & 1);
      typename X::template R<4 * kNT> acc;
      zero<X, 4 * kNT>(acc);
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.eb[m] * sm.Q[tile_at(m, k)]; },
                       [&](int k, int n) { return sm.S[tile_at(k, n)]; });
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, m0 + 16, [&](int m, int k) { return sm.P[tile_at(m, k)]; },
                       [&](int k, int n) { return sm.U[tile_at(k, n)]; });
      warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int col, float& v0, float& v1) {
        if (r < L) X::st2(a.o, rows(r) + col, v0, v1);
      });
    });
    X::sync();
    // G: S_ij = b_L S_ij + sum_r ee_r k_ri u_rj ; warp w: state rows 16 (w / 2).., columns 32 (w % 2)..
    X::for_warps([&](int w) {
      const int m0 = 16 * (w >> 1), n0 = 32 * (w & 1);
      typename X::template R<4 * kNT> acc;
      warp_load<X, kNT>(acc, m0, n0, sm.S, sm.eb[kC - 1]);
      warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return sm.ee[k] * sm.K[tile_at(k, m)]; },
                       [&](int k, int n) { return sm.U[tile_at(k, n)]; });
      warp_store<X, kNT>(acc, kNT, m0, n0, sm.S);
    });
    X::sync();
  }
  if (a.fin) store_state<X>(a.fin + bh * SS, sm.S);
}

}  // namespace pgolf::ops::gdn_tc
