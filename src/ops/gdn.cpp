// CPU GatedDeltaNet ops (TECHNIQUES.md §5.18, docs/GDN.md): the chunked form (forward, backward), the
// recurrent form and the short convolution. One template on contiguous arrays serves the float op (inputs
// converted to f32, work in f32) and the double reference; the (b, h) rows run in parallel.
#include "ops/gdn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "ops/cpu_threads.h"
#include "ops/cpu_util.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

struct Dims {
  int64_t B, T, H, Dk, Dv;
  int C;
  int64_t nc() const { return gdn_num_chunks(T, C); }
};

template <class S>
S dotp(const S* a, const S* b, int64_t n) {
  S s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Per-chunk work arrays, gathered from the (B, T, H, D) layout: row r of the chunk is token t0 + r.
template <class S>
struct Chunk {
  std::vector<S> q, k, v, gc, bt, b, vt, u, A;  // gc: cumulative log decay; b = exp(gc); vt = v - b S0^T k
  int64_t L = 0;
  void init(const Dims& d) {
    q.resize(static_cast<size_t>(d.C * d.Dk));
    k.resize(q.size());
    v.resize(static_cast<size_t>(d.C * d.Dv));
    vt.resize(v.size());
    u.resize(v.size());
    gc.resize(static_cast<size_t>(d.C));
    bt.resize(gc.size());
    b.resize(gc.size());
    A.resize(static_cast<size_t>(d.C * d.C));
  }
  // Loads the chunk starting at token t0 of row (bi, h) and computes U from the start state S0 (Dk x Dv):
  //   vt_r = v_r - b_r S0^T k_r ;  (I + A) U = diag(beta) vt ,  A_rs = beta_r (b_r / b_s) k_r.k_s (s < r)
  void load_and_solve(const S* Q, const S* K, const S* V, const S* G, const S* BETA, const S* S0, const Dims& d,
                      int64_t bi, int64_t h, int64_t t0) {
    L = std::min<int64_t>(d.C, d.T - t0);
    S acc = 0;
    for (int64_t r = 0; r < L; ++r) {
      const int64_t row = (bi * d.T + t0 + r) * d.H + h;
      std::copy(Q + row * d.Dk, Q + (row + 1) * d.Dk, q.begin() + r * d.Dk);
      std::copy(K + row * d.Dk, K + (row + 1) * d.Dk, k.begin() + r * d.Dk);
      std::copy(V + row * d.Dv, V + (row + 1) * d.Dv, v.begin() + r * d.Dv);
      acc += G[row];
      gc[static_cast<size_t>(r)] = acc;
      b[static_cast<size_t>(r)] = std::exp(acc);
      bt[static_cast<size_t>(r)] = BETA[row];
    }
    for (int64_t r = 0; r < L; ++r) {
      const S* kr = &k[static_cast<size_t>(r * d.Dk)];
      S* vr = &vt[static_cast<size_t>(r * d.Dv)];
      for (int64_t j = 0; j < d.Dv; ++j) vr[j] = v[static_cast<size_t>(r * d.Dv + j)];
      const S br = b[static_cast<size_t>(r)];
      for (int64_t i = 0; i < d.Dk; ++i) {
        const S c = br * kr[i];
        const S* srow = S0 + i * d.Dv;
        for (int64_t j = 0; j < d.Dv; ++j) vr[j] -= c * srow[j];
      }
      for (int64_t s = 0; s < r; ++s)
        A[static_cast<size_t>(r * d.C + s)] = bt[static_cast<size_t>(r)] *
                                              std::exp(gc[static_cast<size_t>(r)] - gc[static_cast<size_t>(s)]) *
                                              dotp(kr, &k[static_cast<size_t>(s * d.Dk)], d.Dk);
      S* ur = &u[static_cast<size_t>(r * d.Dv)];
      for (int64_t j = 0; j < d.Dv; ++j) ur[j] = bt[static_cast<size_t>(r)] * vr[j];
      for (int64_t s = 0; s < r; ++s) {
        const S a = A[static_cast<size_t>(r * d.C + s)];
        const S* us = &u[static_cast<size_t>(s * d.Dv)];
        for (int64_t j = 0; j < d.Dv; ++j) ur[j] -= a * us[j];
      }
    }
  }
};

template <class S>
void chunk_fwd(const S* Q, const S* K, const S* V, const S* G, const S* BETA, const S* init, S* O, S* states, S* fin,
               const Dims& d) {
  const int64_t NC = d.nc(), SS = d.Dk * d.Dv;
  cpu::parallel_for(d.B * d.H, 1, [&](int64_t lo, int64_t hi) {
    Chunk<S> ch;
    ch.init(d);
    std::vector<S> st0(static_cast<size_t>(SS)), sq(static_cast<size_t>(d.Dv));
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t bi = bh / d.H, h = bh % d.H;
      if (init)
        std::copy(init + bh * SS, init + (bh + 1) * SS, st0.begin());
      else
        std::fill(st0.begin(), st0.end(), S(0));
      for (int64_t c = 0; c < NC; ++c) {
        std::copy(st0.begin(), st0.end(), states + (bh * NC + c) * SS);
        const int64_t t0 = c * d.C;
        ch.load_and_solve(Q, K, V, G, BETA, st0.data(), d, bi, h, t0);
        const int64_t L = ch.L;
        // o_r = b_r S0^T q_r + sum_{s<=r} (b_r/b_s) (q_r.k_s) u_s
        for (int64_t r = 0; r < L; ++r) {
          const S* qr = &ch.q[static_cast<size_t>(r * d.Dk)];
          std::fill(sq.begin(), sq.end(), S(0));
          for (int64_t i = 0; i < d.Dk; ++i)
            for (int64_t j = 0; j < d.Dv; ++j)
              sq[static_cast<size_t>(j)] += qr[i] * st0[static_cast<size_t>(i * d.Dv + j)];
          const S br = ch.b[static_cast<size_t>(r)];
          for (int64_t j = 0; j < d.Dv; ++j) sq[static_cast<size_t>(j)] *= br;
          for (int64_t s = 0; s <= r; ++s) {
            const S p = std::exp(ch.gc[static_cast<size_t>(r)] - ch.gc[static_cast<size_t>(s)]) *
                        dotp(qr, &ch.k[static_cast<size_t>(s * d.Dk)], d.Dk);
            const S* us = &ch.u[static_cast<size_t>(s * d.Dv)];
            for (int64_t j = 0; j < d.Dv; ++j) sq[static_cast<size_t>(j)] += p * us[j];
          }
          const int64_t row = (bi * d.T + t0 + r) * d.H + h;
          std::copy(sq.begin(), sq.end(), O + row * d.Dv);
        }
        // S_end = b_L S0 + sum_r (b_L/b_r) k_r u_r^T
        const S gl = ch.gc[static_cast<size_t>(L - 1)], bl = std::exp(gl);
        for (auto& x : st0) x *= bl;
        for (int64_t r = 0; r < L; ++r) {
          const S e = std::exp(gl - ch.gc[static_cast<size_t>(r)]);
          const S* kr = &ch.k[static_cast<size_t>(r * d.Dk)];
          const S* ur = &ch.u[static_cast<size_t>(r * d.Dv)];
          for (int64_t i = 0; i < d.Dk; ++i) {
            const S c = e * kr[i];
            S* srow = &st0[static_cast<size_t>(i * d.Dv)];
            for (int64_t j = 0; j < d.Dv; ++j) srow[j] += c * ur[j];
          }
        }
      }
      if (fin) std::copy(st0.begin(), st0.end(), fin + bh * SS);
    }
  });
}

template <class S>
void chunk_bwd(const S* Q, const S* K, const S* V, const S* G, const S* BETA, const S* states, const S* DO,
               const S* dfin, S* DQ, S* DK, S* DV, S* DG, S* DBETA, S* dinit, const Dims& d) {
  const int64_t NC = d.nc(), SS = d.Dk * d.Dv, C = d.C, Dk = d.Dk, Dv = d.Dv;
  cpu::parallel_for(d.B * d.H, 1, [&](int64_t lo, int64_t hi) {
    Chunk<S> ch;
    ch.init(d);
    const size_t nk = static_cast<size_t>(C * Dk), nv = static_cast<size_t>(C * Dv);
    std::vector<S> dS(static_cast<size_t>(SS)), dS0(static_cast<size_t>(SS)), dq(nk), dk(nk), du(nv), dvt(nv),
        dgc(static_cast<size_t>(C)), dbt(static_cast<size_t>(C)), tmp(static_cast<size_t>(std::max(Dk, Dv))),
        tmp2(static_cast<size_t>(std::max(Dk, Dv))), dO(nv);
    auto I = [](int64_t x) { return static_cast<size_t>(x); };
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t bi = bh / d.H, h = bh % d.H;
      if (dfin)
        std::copy(dfin + bh * SS, dfin + (bh + 1) * SS, dS.begin());
      else
        std::fill(dS.begin(), dS.end(), S(0));
      for (int64_t c = NC - 1; c >= 0; --c) {
        const S* S0 = states + (bh * NC + c) * SS;
        const int64_t t0 = c * C;
        ch.load_and_solve(Q, K, V, G, BETA, S0, d, bi, h, t0);
        const int64_t L = ch.L;
        for (int64_t r = 0; r < L; ++r) {
          const int64_t row = (bi * d.T + t0 + r) * d.H + h;
          std::copy(DO + row * Dv, DO + (row + 1) * Dv, dO.begin() + r * Dv);
        }
        std::fill(dq.begin(), dq.end(), S(0));
        std::fill(dk.begin(), dk.end(), S(0));
        std::fill(du.begin(), du.end(), S(0));
        std::fill(dgc.begin(), dgc.end(), S(0));
        std::fill(dbt.begin(), dbt.end(), S(0));
        const S gl = ch.gc[I(L - 1)], bl = std::exp(gl);
        // State update S_end = b_L S0 + sum_r e_r k_r u_r^T, e_r = b_L/b_r.
        S dbl = 0;
        for (int64_t x = 0; x < SS; ++x) {
          dS0[I(x)] = bl * dS[I(x)];
          dbl += S0[x] * dS[I(x)];
        }
        dgc[I(L - 1)] += dbl * bl;
        for (int64_t r = 0; r < L; ++r) {
          const S e = std::exp(gl - ch.gc[I(r)]);
          const S* kr = &ch.k[I(r * Dk)];
          const S* ur = &ch.u[I(r * Dv)];
          // tmp = dS^T k_r (Dv) ; tmp2 = dS u_r (Dk)
          std::fill(tmp.begin(), tmp.begin() + Dv, S(0));
          for (int64_t i = 0; i < Dk; ++i)
            for (int64_t j = 0; j < Dv; ++j) tmp[I(j)] += dS[I(i * Dv + j)] * kr[i];
          for (int64_t i = 0; i < Dk; ++i) tmp2[I(i)] = dotp(&dS[I(i * Dv)], ur, Dv);
          for (int64_t j = 0; j < Dv; ++j) du[I(r * Dv + j)] += e * tmp[I(j)];
          for (int64_t i = 0; i < Dk; ++i) dk[I(r * Dk + i)] += e * tmp2[I(i)];
          const S x = e * dotp(ur, tmp.data(), Dv);
          dgc[I(L - 1)] += x;
          dgc[I(r)] -= x;
        }
        // Output O = diag(b) Q S0 + P U, P_rs = (b_r/b_s) q_r.k_s (s <= r).
        for (int64_t r = 0; r < L; ++r) {
          const S br = ch.b[I(r)];
          const S* qr = &ch.q[I(r * Dk)];
          const S* dor = &dO[I(r * Dv)];
          S db = 0;
          for (int64_t i = 0; i < Dk; ++i) {
            const S* srow = S0 + i * Dv;
            const S sd = dotp(srow, dor, Dv);
            dq[I(r * Dk + i)] += br * sd;
            db += qr[i] * sd;
            S* drow = &dS0[I(i * Dv)];
            const S cq = br * qr[i];
            for (int64_t j = 0; j < Dv; ++j) drow[j] += cq * dor[j];
          }
          dgc[I(r)] += db * br;
          for (int64_t s = 0; s <= r; ++s) {
            const S gm = std::exp(ch.gc[I(r)] - ch.gc[I(s)]);
            const S* ks = &ch.k[I(s * Dk)];
            const S qk = dotp(qr, ks, Dk);
            const S dp = dotp(dor, &ch.u[I(s * Dv)], Dv);
            for (int64_t j = 0; j < Dv; ++j) du[I(s * Dv + j)] += gm * qk * dor[j];
            for (int64_t i = 0; i < Dk; ++i) {
              dq[I(r * Dk + i)] += dp * gm * ks[i];
              dk[I(s * Dk + i)] += dp * gm * qr[i];
            }
            const S x = dp * gm * qk;
            dgc[I(r)] += x;
            dgc[I(s)] -= x;
          }
        }
        // Solve (I + A) U = diag(beta) vt: dR = (I + A)^{-T} dU (back substitution, in place in du).
        for (int64_t r = L - 1; r >= 0; --r)
          for (int64_t s = r + 1; s < L; ++s) {
            const S a = ch.A[I(s * C + r)];
            for (int64_t j = 0; j < Dv; ++j) du[I(r * Dv + j)] -= a * du[I(s * Dv + j)];
          }
        // dA_rs = -dR_r.u_s (s < r) ; A_rs = beta_r gm_rs k_r.k_s.
        for (int64_t r = 0; r < L; ++r) {
          const S* kr = &ch.k[I(r * Dk)];
          const S* dr = &du[I(r * Dv)];
          for (int64_t s = 0; s < r; ++s) {
            const S da = -dotp(dr, &ch.u[I(s * Dv)], Dv);
            const S gm = std::exp(ch.gc[I(r)] - ch.gc[I(s)]);
            const S* ks = &ch.k[I(s * Dk)];
            const S kk = dotp(kr, ks, Dk);
            dbt[I(r)] += da * gm * kk;
            const S y = da * ch.bt[I(r)] * gm;
            for (int64_t i = 0; i < Dk; ++i) {
              dk[I(r * Dk + i)] += y * ks[i];
              dk[I(s * Dk + i)] += y * kr[i];
            }
            const S x = da * ch.A[I(r * C + s)];
            dgc[I(r)] += x;
            dgc[I(s)] -= x;
          }
        }
        // R = diag(beta) vt ; vt_r = v_r - b_r S0^T k_r.
        for (int64_t r = 0; r < L; ++r) {
          const S* dr = &du[I(r * Dv)];
          dbt[I(r)] += dotp(dr, &ch.vt[I(r * Dv)], Dv);
          S* dvr = &dvt[I(r * Dv)];
          for (int64_t j = 0; j < Dv; ++j) dvr[j] = ch.bt[I(r)] * dr[j];
          const S br = ch.b[I(r)];
          const S* kr = &ch.k[I(r * Dk)];
          S db = 0;
          for (int64_t i = 0; i < Dk; ++i) {
            const S sd = dotp(S0 + i * Dv, dvr, Dv);
            dk[I(r * Dk + i)] -= br * sd;
            db -= kr[i] * sd;
            S* drow = &dS0[I(i * Dv)];
            const S ck = br * kr[i];
            for (int64_t j = 0; j < Dv; ++j) drow[j] -= ck * dvr[j];
          }
          dgc[I(r)] += db * br;
        }
        // gc = cumsum(g): dg_j = sum_{r >= j} dgc_r. Write the chunk's gradients.
        S acc = 0;
        for (int64_t r = L - 1; r >= 0; --r) {
          acc += dgc[I(r)];
          const int64_t row = (bi * d.T + t0 + r) * d.H + h;
          DG[row] = acc;
          DBETA[row] = dbt[I(r)];
          std::copy(dq.begin() + r * Dk, dq.begin() + (r + 1) * Dk, DQ + row * Dk);
          std::copy(dk.begin() + r * Dk, dk.begin() + (r + 1) * Dk, DK + row * Dk);
          std::copy(dvt.begin() + r * Dv, dvt.begin() + (r + 1) * Dv, DV + row * Dv);
        }
        dS.swap(dS0);
      }
      if (dinit) std::copy(dS.begin(), dS.end(), dinit + bh * SS);
    }
  });
}

template <class S>
void recurrent_fwd(const S* Q, const S* K, const S* V, const S* G, const S* BETA, S* state, S* O, const Dims& d) {
  const int64_t SS = d.Dk * d.Dv, Dk = d.Dk, Dv = d.Dv;
  cpu::parallel_for(d.B * d.H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<S> u(static_cast<size_t>(Dv));
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t bi = bh / d.H, h = bh % d.H;
      S* St = state + bh * SS;
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t row = (bi * d.T + t) * d.H + h;
        const S a = std::exp(G[row]), be = BETA[row];
        const S* k = K + row * Dk;
        const S* q = Q + row * Dk;
        const S* v = V + row * Dv;
        // u = beta (v - alpha S^T k) ; S = alpha S + k u^T ; o = S^T q
        std::fill(u.begin(), u.end(), S(0));
        for (int64_t i = 0; i < Dk; ++i)
          for (int64_t j = 0; j < Dv; ++j) u[static_cast<size_t>(j)] += St[i * Dv + j] * k[i];
        for (int64_t j = 0; j < Dv; ++j) u[static_cast<size_t>(j)] = be * (v[j] - a * u[static_cast<size_t>(j)]);
        for (int64_t i = 0; i < Dk; ++i)
          for (int64_t j = 0; j < Dv; ++j) St[i * Dv + j] = a * St[i * Dv + j] + k[i] * u[static_cast<size_t>(j)];
        S* o = O + row * Dv;
        for (int64_t j = 0; j < Dv; ++j) {
          S s = 0;
          for (int64_t i = 0; i < Dk; ++i) s += St[i * Dv + j] * q[i];
          o[j] = s;
        }
      }
    }
  });
}

template <class S>
S sigm(S z) {
  return S(1) / (S(1) + std::exp(-z));
}

template <class S, class TX, class TY>
void conv_fwd(const TX* x, const float* wf, const S* wd, TY* y, int64_t B, int64_t T, int64_t C, int64_t K, bool silu) {
  auto w = [&](int64_t c, int64_t j) { return wf ? static_cast<S>(wf[c * K + j]) : wd[c * K + j]; };
  cpu::parallel_for(B * T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % T;
      for (int64_t c = 0; c < C; ++c) {
        S z = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t ts = t - K + 1 + j;
          if (ts >= 0) z += w(c, j) * ld<S>(x[(bt - t + ts) * C + c]);
        }
        st(y[bt * C + c], silu ? z * sigm(z) : z);
      }
    }
  });
}

// dx and dw: each (b, t) row is independent for dx; dw sums over rows (per-thread partials).
template <class S, class TX, class TD, class TDX>
void conv_bwd(const TX* x, const float* wf, const S* wd, const TD* dy, TDX* dx, float* dwf, S* dwd, int64_t B,
              int64_t T, int64_t C, int64_t K, bool silu) {
  auto w = [&](int64_t c, int64_t j) { return wf ? static_cast<S>(wf[c * K + j]) : wd[c * K + j]; };
  // dz = dy * silu'(z), recomputing z.
  std::vector<S> dz(static_cast<size_t>(B * T * C));
  cpu::parallel_for(B * T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % T;
      for (int64_t c = 0; c < C; ++c) {
        S g = ld<S>(dy[bt * C + c]);
        if (silu) {
          S z = 0;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t ts = t - K + 1 + j;
            if (ts >= 0) z += w(c, j) * ld<S>(x[(bt - t + ts) * C + c]);
          }
          const S sg = sigm(z);
          g *= sg * (S(1) + z * (S(1) - sg));
        }
        dz[static_cast<size_t>(bt * C + c)] = g;
      }
    }
  });
  // dx[t] = sum_j w[j] dz[t + K - 1 - j]
  cpu::parallel_for(B * T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % T;
      for (int64_t c = 0; c < C; ++c) {
        S s = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t to = t + K - 1 - j;
          if (to < T) s += w(c, j) * dz[static_cast<size_t>((bt - t + to) * C + c)];
        }
        st(dx[bt * C + c], s);
      }
    }
  });
  // dw[c, j] += sum_{b,t} dz[t] x[t - K + 1 + j]  (serial over channels' blocks: C*K outputs)
  cpu::parallel_for(C, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c)
      for (int64_t j = 0; j < K; ++j) {
        S s = 0;
        for (int64_t bi = 0; bi < B; ++bi)
          for (int64_t t = std::max<int64_t>(0, K - 1 - j); t < T; ++t)
            s += dz[static_cast<size_t>((bi * T + t) * C + c)] * ld<S>(x[(bi * T + t - K + 1 + j) * C + c]);
        if (dwf)
          dwf[c * K + j] += static_cast<float>(s);
        else
          dwd[c * K + j] += s;
      }
  });
}

// softplus(z) = log(1 + e^z), stable for large |z|.
template <class S>
S softplus(S z) {
  return z > S(20) ? z : std::log1p(std::exp(z));
}

template <class S, class TA, class TB>
void gates_fwd(const TA* a, const TB* bb, const S* A_log, const S* dt_bias, S* g, S* beta, int64_t rows, int64_t H,
               S scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r % H;
    g[r] = -std::exp(A_log[h]) * softplus(ld<S>(a[r]) + dt_bias[h]);
    beta[r] = scale * sigm(ld<S>(bb[r]));
  }
}

// da = -dg exp(A_log) sigmoid(a + dt_bias) ; dA_log += sum dg g ; ddt_bias += sum da ; dbb = dbeta scale s (1 - s).
template <class S, class TA, class TB, class TDA, class TDB>
void gates_bwd(const TA* a, const TB* bb, const S* A_log, const S* dt_bias, const S* dg, const S* dbeta, TDA* da,
               TDB* dbb, S* dA_log, S* ddt_bias, int64_t rows, int64_t H, S scale) {
  std::vector<S> sa(static_cast<size_t>(H), S(0)), sd(static_cast<size_t>(H), S(0));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r % H;
    const S ea = std::exp(A_log[h]), z = ld<S>(a[r]) + dt_bias[h];
    const S d = -dg[r] * ea * sigm(z);
    st(da[r], d);
    sd[static_cast<size_t>(h)] += d;
    sa[static_cast<size_t>(h)] += dg[r] * (-ea * softplus(z));
    const S s = sigm(ld<S>(bb[r]));
    st(dbb[r], dbeta[r] * scale * s * (S(1) - s));
  }
  for (int64_t h = 0; h < H; ++h) {
    dA_log[h] += sa[static_cast<size_t>(h)];
    ddt_bias[h] += sd[static_cast<size_t>(h)];
  }
}

// ---- argument checks ----------------------------------------------------------------------------------

Dims check_gates(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                 int chunk) {
  cpu::check_fb(op, "q", q);
  check_ndim(op, "q", q, 4);
  cpu::check_fb(op, "k", k);
  check_shape(op, "k", k, q.shape());
  cpu::check_fb(op, "v", v);
  check_ndim(op, "v", v, 4);
  PG_CHECK(v.dim(0) == q.dim(0) && v.dim(1) == q.dim(1) && v.dim(2) == q.dim(2),
           "{}: v is {} but q is {}: (B, T, H) must match", op, v.desc(), q.desc());
  const Shape sg{q.dim(0), q.dim(1), q.dim(2)};
  cpu::check_f32(op, "g", g);
  check_shape(op, "g", g, sg);
  cpu::check_f32(op, "beta", beta);
  check_shape(op, "beta", beta, sg);
  PG_CHECK(chunk >= 1 && chunk <= 256, "{}: chunk {} must be in [1, 256]", op, chunk);
  PG_CHECK(q.dim(3) >= 1 && v.dim(3) >= 1, "{}: head dims of q {} and v {} must be >= 1", op, q.desc(), v.desc());
  return Dims{q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.dim(3), chunk};
}

void check_state(const char* op, const char* name, const Tensor& s, const Dims& d) {
  if (!s.defined()) return;
  cpu::check_f32(op, name, s);
  check_shape(op, name, s, Shape{d.B, d.H, d.Dk, d.Dv});
}

void check_out(const char* op, const char* name, const Tensor& t, const Shape& want,
               std::initializer_list<const Tensor*> inputs) {
  cpu::check_fb(op, name, t);
  check_shape(op, name, t, want);
  for (const Tensor* in : inputs)
    PG_CHECK(t.numel() == 0 || !in->defined() || in->data() != t.data(), "{}: {} may not alias an input", op, name);
}

std::vector<float> fv(const Tensor& t) { return t.defined() ? t.to_float_vector() : std::vector<float>(); }

void store(const char* op, const char* name, const Tensor& t, const std::vector<float>& v) {
  cpu::visit_fb(op, name, t, [&](auto* p) {
    for (size_t i = 0; i < v.size(); ++i) st(p[i], v[i]);
  });
}

}  // namespace

namespace {
std::atomic<GdnKernel> g_gdn_kernel{GdnKernel::Auto};
std::atomic<bool> g_conv_generic{false};
}  // namespace
void set_short_conv_generic(bool generic) { g_conv_generic.store(generic); }
bool short_conv_generic_forced() { return g_conv_generic.load(); }
void set_gdn_kernel(GdnKernel k) { g_gdn_kernel.store(k); }
GdnKernel gdn_kernel_override() { return g_gdn_kernel.load(); }
const char* gdn_kernel_name(GdnKernel k) {
  switch (k) {
    case GdnKernel::Loop: return "loop";
    case GdnKernel::Tc: return "tc";
    default: return "auto";
  }
}

void gdn_chunk_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                       const Tensor& init, const Tensor& o, const Tensor& states, const Tensor& final_state,
                       int chunk) {
  const char* op = "gdn_chunk_forward";
  const Dims d = check_gates(op, q, k, v, g, beta, chunk);
  check_state(op, "init", init, d);
  check_state(op, "final_state", final_state, d);
  check_out(op, "o", o, Shape{d.B, d.T, d.H, d.Dv}, {&q, &k, &v, &g, &beta, &init});
  cpu::check_f32(op, "states", states);
  check_shape(op, "states", states, Shape{d.B, d.H, d.nc(), d.Dk, d.Dv});
  if (check_same_device(op, {&q, &k, &v, &g, &beta, &init, &o, &states, &final_state}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::gdn_chunk_forward(q, k, v, g, beta, init, o, states, final_state, chunk));
    return;
  }
  if (d.T == 0 || d.B * d.H == 0) {
    if (final_state.defined() && final_state.data() != init.data()) {
      const std::vector<float> z =
          init.defined() ? fv(init) : std::vector<float>(static_cast<size_t>(final_state.numel()), 0.f);
      std::copy(z.begin(), z.end(), final_state.ptr<float>());
    }
    return;
  }
  const auto fq = fv(q), fk = fv(k), fvv = fv(v), fi = fv(init);
  std::vector<float> fo(static_cast<size_t>(o.numel()));
  chunk_fwd<float>(fq.data(), fk.data(), fvv.data(), g.ptr<float>(), beta.ptr<float>(),
                   init.defined() ? fi.data() : nullptr, fo.data(), states.ptr<float>(),
                   final_state.defined() ? final_state.ptr<float>() : nullptr, d);
  store(op, "o", o, fo);
}

void gdn_chunk_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                        const Tensor& states, const Tensor& dout, const Tensor& dfinal, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv, const Tensor& dg, const Tensor& dbeta, const Tensor& dinit,
                        int chunk) {
  const char* op = "gdn_chunk_backward";
  const Dims d = check_gates(op, q, k, v, g, beta, chunk);
  cpu::check_f32(op, "states", states);
  check_shape(op, "states", states, Shape{d.B, d.H, d.nc(), d.Dk, d.Dv});
  cpu::check_fb(op, "dout", dout);
  check_shape(op, "dout", dout, Shape{d.B, d.T, d.H, d.Dv});
  check_state(op, "dfinal", dfinal, d);
  check_state(op, "dinit", dinit, d);
  const std::initializer_list<const Tensor*> ins = {&q, &k, &v, &g, &beta, &states, &dout, &dfinal};
  check_out(op, "dq", dq, q.shape(), ins);
  check_out(op, "dk", dk, q.shape(), ins);
  check_out(op, "dv", dv, v.shape(), ins);
  cpu::check_f32(op, "dg", dg);
  check_shape(op, "dg", dg, g.shape());
  cpu::check_f32(op, "dbeta", dbeta);
  check_shape(op, "dbeta", dbeta, g.shape());
  for (const Tensor* t : ins) {
    PG_CHECK(dg.numel() == 0 || !t->defined() || (t->data() != dg.data() && t->data() != dbeta.data()),
             "{}: dg and dbeta may not alias an input", op);
  }
  if (check_same_device(op, {&q, &k, &v, &g, &beta, &states, &dout, &dfinal, &dq, &dk, &dv, &dg, &dbeta, &dinit}) ==
      Device::CUDA) {
    PG_CUDA_DISPATCH(
        op, cuda::gdn_chunk_backward(q, k, v, g, beta, states, dout, dfinal, dq, dk, dv, dg, dbeta, dinit, chunk));
    return;
  }
  if (d.T == 0 || d.B * d.H == 0) {
    if (dinit.defined()) {
      const std::vector<float> z =
          dfinal.defined() ? fv(dfinal) : std::vector<float>(static_cast<size_t>(dinit.numel()), 0.f);
      std::copy(z.begin(), z.end(), dinit.ptr<float>());
    }
    return;
  }
  const auto fq = fv(q), fk = fv(k), fvv = fv(v), fdo = fv(dout), fdf = fv(dfinal);
  std::vector<float> fdq(fq.size()), fdk(fk.size()), fdv(fvv.size());
  chunk_bwd<float>(fq.data(), fk.data(), fvv.data(), g.ptr<float>(), beta.ptr<float>(), states.ptr<float>(), fdo.data(),
                   dfinal.defined() ? fdf.data() : nullptr, fdq.data(), fdk.data(), fdv.data(), dg.ptr<float>(),
                   dbeta.ptr<float>(), dinit.defined() ? dinit.ptr<float>() : nullptr, d);
  store(op, "dq", dq, fdq);
  store(op, "dk", dk, fdk);
  store(op, "dv", dv, fdv);
}

void gdn_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                           const Tensor& state, const Tensor& o) {
  const char* op = "gdn_recurrent_forward";
  const Dims d = check_gates(op, q, k, v, g, beta, kGdnChunk);
  check_defined(op, "state", state);
  check_state(op, "state", state, d);
  check_out(op, "o", o, Shape{d.B, d.T, d.H, d.Dv}, {&q, &k, &v, &g, &beta, &state});
  if (check_same_device(op, {&q, &k, &v, &g, &beta, &state, &o}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::gdn_recurrent_forward(q, k, v, g, beta, state, o));
    return;
  }
  if (d.T == 0) return;
  const auto fq = fv(q), fk = fv(k), fvv = fv(v);
  std::vector<float> fo(static_cast<size_t>(o.numel()));
  recurrent_fwd<float>(fq.data(), fk.data(), fvv.data(), g.ptr<float>(), beta.ptr<float>(), state.ptr<float>(),
                       fo.data(), d);
  store(op, "o", o, fo);
}

namespace {
void check_gates_args(const char* op, const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias) {
  cpu::check_fb(op, "a", a);
  check_ndim(op, "a", a, 3);
  cpu::check_fb(op, "bb", bb);
  check_shape(op, "bb", bb, a.shape());
  cpu::check_f32(op, "A_log", A_log);
  check_shape(op, "A_log", A_log, Shape{a.dim(2)});
  cpu::check_f32(op, "dt_bias", dt_bias);
  check_shape(op, "dt_bias", dt_bias, Shape{a.dim(2)});
}
}  // namespace

void gdn_gates_forward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& g,
                       const Tensor& beta, float beta_scale) {
  const char* op = "gdn_gates_forward";
  check_gates_args(op, a, bb, A_log, dt_bias);
  cpu::check_f32(op, "g", g);
  check_shape(op, "g", g, a.shape());
  cpu::check_f32(op, "beta", beta);
  check_shape(op, "beta", beta, a.shape());
  if (check_same_device(op, {&a, &bb, &A_log, &dt_bias, &g, &beta}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::gdn_gates_forward(a, bb, A_log, dt_bias, g, beta, beta_scale));
    return;
  }
  cpu::visit_fb(op, "a", a, [&](auto* ap) {
    cpu::visit_fb(op, "bb", bb, [&](auto* bp) {
      gates_fwd<float>(ap, bp, A_log.ptr<float>(), dt_bias.ptr<float>(), g.ptr<float>(), beta.ptr<float>(), a.numel(),
                       a.dim(2), beta_scale);
    });
  });
}

void gdn_gates_backward(const Tensor& a, const Tensor& bb, const Tensor& A_log, const Tensor& dt_bias, const Tensor& dg,
                        const Tensor& dbeta, const Tensor& da, const Tensor& dbb, const Tensor& dA_log,
                        const Tensor& ddt_bias, float beta_scale) {
  const char* op = "gdn_gates_backward";
  check_gates_args(op, a, bb, A_log, dt_bias);
  cpu::check_f32(op, "dg", dg);
  check_shape(op, "dg", dg, a.shape());
  cpu::check_f32(op, "dbeta", dbeta);
  check_shape(op, "dbeta", dbeta, a.shape());
  cpu::check_fb(op, "da", da);
  check_shape(op, "da", da, a.shape());
  cpu::check_fb(op, "dbb", dbb);
  check_shape(op, "dbb", dbb, a.shape());
  cpu::check_f32(op, "dA_log", dA_log);
  check_shape(op, "dA_log", dA_log, A_log.shape());
  cpu::check_f32(op, "ddt_bias", ddt_bias);
  check_shape(op, "ddt_bias", ddt_bias, A_log.shape());
  if (check_same_device(op, {&a, &bb, &A_log, &dt_bias, &dg, &dbeta, &da, &dbb, &dA_log, &ddt_bias}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op,
                     cuda::gdn_gates_backward(a, bb, A_log, dt_bias, dg, dbeta, da, dbb, dA_log, ddt_bias, beta_scale));
    return;
  }
  cpu::visit_fb(op, "a", a, [&](auto* ap) {
    cpu::visit_fb(op, "bb", bb, [&](auto* bp) {
      cpu::visit_fb(op, "da", da, [&](auto* dap) {
        cpu::visit_fb(op, "dbb", dbb, [&](auto* dbp) {
          gates_bwd<float>(ap, bp, A_log.ptr<float>(), dt_bias.ptr<float>(), dg.ptr<float>(), dbeta.ptr<float>(), dap,
                           dbp, dA_log.ptr<float>(), ddt_bias.ptr<float>(), a.numel(), a.dim(2), beta_scale);
        });
      });
    });
  });
}

namespace {
void check_conv(const char* op, const Tensor& x, const Tensor& w) {
  cpu::check_fb(op, "x", x);
  check_ndim(op, "x", x, 3);
  cpu::check_f32(op, "w", w);
  check_ndim(op, "w", w, 2);
  PG_CHECK(w.dim(0) == x.dim(2), "{}: w is {} but x {} has {} channels", op, w.desc(), x.desc(), x.dim(2));
  PG_CHECK(w.dim(1) >= 1 && w.dim(1) <= 16, "{}: kernel size {} of w {} must be in [1, 16]", op, w.dim(1), w.desc());
}
}  // namespace

void short_conv_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool silu) {
  const char* op = "short_conv_forward";
  check_conv(op, x, w);
  cpu::check_fb(op, "y", y);
  check_shape(op, "y", y, x.shape());
  PG_CHECK(y.data() != x.data(), "{}: y may not alias x", op);
  if (check_same_device(op, {&x, &w, &y}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::short_conv_forward(x, w, y, silu));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "y", y, [&](auto* yp) {
      conv_fwd<float>(xp, w.ptr<float>(), static_cast<const float*>(nullptr), yp, x.dim(0), x.dim(1), x.dim(2),
                      w.dim(1), silu);
    });
  });
}

void short_conv_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                         bool silu) {
  const char* op = "short_conv_backward";
  check_conv(op, x, w);
  cpu::check_fb(op, "dy", dy);
  check_shape(op, "dy", dy, x.shape());
  cpu::check_fb(op, "dx", dx);
  check_shape(op, "dx", dx, x.shape());
  PG_CHECK(dx.data() != x.data() && dx.data() != dy.data(), "{}: dx may not alias x or dy", op);
  cpu::check_f32(op, "dw", dw);
  check_shape(op, "dw", dw, w.shape());
  if (check_same_device(op, {&x, &w, &dy, &dx, &dw}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::short_conv_backward(x, w, dy, dx, dw, silu));
    return;
  }
  cpu::visit_fb(op, "x", x, [&](auto* xp) {
    cpu::visit_fb(op, "dy", dy, [&](auto* dyp) {
      cpu::visit_fb(op, "dx", dx, [&](auto* dxp) {
        conv_bwd<float>(xp, w.ptr<float>(), static_cast<const float*>(nullptr), dyp, dxp, dw.ptr<float>(),
                        static_cast<float*>(nullptr), x.dim(0), x.dim(1), x.dim(2), w.dim(1), silu);
      });
    });
  });
}

namespace ref {
void gdn_chunk_forward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                       const double* init, double* o, double* states, double* final_state, int64_t B, int64_t T,
                       int64_t H, int64_t Dk, int64_t Dv, int chunk) {
  chunk_fwd<double>(q, k, v, g, beta, init, o, states, final_state, Dims{B, T, H, Dk, Dv, chunk});
}
void gdn_chunk_backward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                        const double* states, const double* dout, const double* dfinal, double* dq, double* dk,
                        double* dv, double* dg, double* dbeta, double* dinit, int64_t B, int64_t T, int64_t H,
                        int64_t Dk, int64_t Dv, int chunk) {
  chunk_bwd<double>(q, k, v, g, beta, states, dout, dfinal, dq, dk, dv, dg, dbeta, dinit, Dims{B, T, H, Dk, Dv, chunk});
}
void gdn_recurrent_forward(const double* q, const double* k, const double* v, const double* g, const double* beta,
                           double* state, double* o, int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv) {
  recurrent_fwd<double>(q, k, v, g, beta, state, o, Dims{B, T, H, Dk, Dv, kGdnChunk});
}
void gdn_gates_forward(const double* a, const double* bb, const double* A_log, const double* dt_bias, double* g,
                       double* beta, int64_t rows, int64_t H, double beta_scale) {
  gates_fwd<double>(a, bb, A_log, dt_bias, g, beta, rows, H, beta_scale);
}
void gdn_gates_backward(const double* a, const double* bb, const double* A_log, const double* dt_bias, const double* dg,
                        const double* dbeta, double* da, double* dbb, double* dA_log, double* ddt_bias, int64_t rows,
                        int64_t H, double beta_scale) {
  gates_bwd<double>(a, bb, A_log, dt_bias, dg, dbeta, da, dbb, dA_log, ddt_bias, rows, H, beta_scale);
}
void short_conv_forward(const double* x, const double* w, double* y, int64_t B, int64_t T, int64_t C, int64_t K,
                        bool silu) {
  conv_fwd<double>(x, nullptr, w, y, B, T, C, K, silu);
}
void short_conv_backward(const double* x, const double* w, const double* dy, double* dx, double* dw, int64_t B,
                         int64_t T, int64_t C, int64_t K, bool silu) {
  conv_bwd<double>(x, nullptr, w, dy, dx, nullptr, dw, B, T, C, K, silu);
}
}  // namespace ref

}  // namespace pgolf::ops
