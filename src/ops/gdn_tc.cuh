#pragma once
// Tensor-core GatedDeltaNet chunk kernels (docs/GDN.md "GPU kernels"): the pieces both the forward
// (gdn_tc_fwd.cuh) and the backward (gdn_tc_bwd.cuh) use. Shapes are fixed: chunk C = 64, Dk = Dv = 64, one
// thread block of 8 warps per (batch, head), every 64 x 64 operand an fp32 tile in shared memory (tf32::tile_at)
// and every dense product a set of warp tiles of 16 rows x 32 columns on mma.sync m16n8k8 (tf32 in, fp32
// accumulate). The code is written once against an execution policy X so that the same source runs
//   - on the GPU (DevExec: one CUDA thread per lane, __syncthreads between phases), and
//   - on the CPU (HostExec, tests only: every warp and lane in turn, the mma emulated through the fragment
//     maps of mma_tf32.cuh), which is how tests/ops/test_gdn_tc.cpp checks layouts and loop bounds.
// The policy's vocabulary: for_warps(f) runs f(warp) for the calling warp (host: every warp); for_threads(n, f)
// spreads f(0..n-1) over the block; single(f) runs f once; sync() is a block barrier; lanes() is the calling lane
// (host: all 32); Regs<kLanes, N> holds N registers per lane (host: of all 32 lanes); mma and xor_sum are the
// warp-wide operations. Code between two sync() calls is a "phase": no warp may read what another warp writes in
// the same phase (the host emulation runs warps in either order to catch that).
#include <cstdint>

#include "ops/mma_tf32.cuh"

#if defined(__CUDACC__)
#include "ops/cuda_common.cuh"
#define PG_GDN_FN __device__ __forceinline__
#define PG_UNROLL _Pragma("unroll")
#else
#include <cmath>
#include <cstring>
#define PG_GDN_FN inline
#define PG_UNROLL
#endif

namespace pgolf::ops::gdn_tc {

using tf32::frag_a_col;
using tf32::frag_a_row;
using tf32::frag_b_col;
using tf32::frag_b_row;
using tf32::frag_c_col;
using tf32::frag_c_row;
using tf32::kTileFloats;
using tf32::tile_at;

constexpr int kC = 64;  // chunk, Dk and Dv: the only shape these kernels take
constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kNT = 4;  // n-tiles (of 8 columns) per warp tile: 16 x 32

// N registers per lane; L = 1 on the GPU (the calling lane), 32 on the host (every lane of the warp).
template <int L, int N>
struct Regs {
  float v[L][N];
  PG_GDN_FN float* operator[](int lane) { return v[L == 1 ? 0 : lane]; }
  PG_GDN_FN const float* operator[](int lane) const { return v[L == 1 ? 0 : lane]; }
};

struct LaneRange {
  int b, e;
  struct It {
    int i;
    PG_GDN_FN int operator*() const { return i; }
    PG_GDN_FN It& operator++() {
      ++i;
      return *this;
    }
    PG_GDN_FN bool operator!=(const It& o) const { return i != o.i; }
  };
  PG_GDN_FN It begin() const { return {b}; }
  PG_GDN_FN It end() const { return {e}; }
};

#if defined(__CUDACC__)
struct DevExec {
  static constexpr int kLanes = 1;
  using Ptr = cuda::detail::DevPtr;
  template <int N>
  using R = Regs<1, N>;

  __device__ static int lane_id() { return threadIdx.x & 31; }
  __device__ static LaneRange lanes() { return {lane_id(), lane_id() + 1}; }
  template <class F>
  __device__ static void for_warps(const F& f) {
    f(static_cast<int>(threadIdx.x >> 5));
  }
  template <class F>
  __device__ static void for_threads(int n, const F& f) {
    for (int i = threadIdx.x; i < n; i += kThreads) f(i);
  }
  template <class F>
  __device__ static void single(const F& f) {
    if (threadIdx.x == 0) f();
  }
  __device__ static void sync() { __syncthreads(); }
  __device__ static void syncwarp() { __syncwarp(); }
  // The decays Gamma = exp(gc_r - gc_s) in the epilogues: the hardware exp2 (relative error ~1e-6 for the
  // exponents here) is far below the tf32 rounding of the products they scale, and much cheaper than expf.
  __device__ static float exp(float x) { return __expf(x); }
  __device__ static float tf32(float x) { return __uint_as_float(tf32::to_tf32(x)); }

  // acc[ai..ai+3] += a[0..3] * b[bi..bi+1] over the warp (a, b already tf32).
  template <int NA, int NB>
  __device__ static void mma(R<NA>& acc, int ai, const R<4>& a, const R<NB>& b, int bi) {
    const uint32_t ua[4] = {__float_as_uint(a.v[0][0]), __float_as_uint(a.v[0][1]), __float_as_uint(a.v[0][2]),
                            __float_as_uint(a.v[0][3])};
    const uint32_t ub[2] = {__float_as_uint(b.v[0][bi]), __float_as_uint(b.v[0][bi + 1])};
    tf32::mma_tf32(acc.v[0] + ai, ua, ub);
  }
  // v[i] += v[i] of lane ^ mask, in every lane.
  template <int N>
  __device__ static void xor_sum(R<N>& v, int i, int mask) {
    v.v[0][i] += __shfl_xor_sync(0xffffffffu, v.v[0][i], mask);
  }

  // Global memory: activations through DevPtr (f32 or bf16), f32 arrays directly.
  __device__ static float ld(Ptr p, int64_t i) { return cuda::detail::load1(p, i); }
  __device__ static void ld2(Ptr p, int64_t i, float* v) {  // i even
    if (p.k == cuda::detail::Kind::F32) {
      const float2 x = *reinterpret_cast<const float2*>(static_cast<const float*>(p.p) + i);
      v[0] = x.x, v[1] = x.y;
    } else if (p.k == cuda::detail::Kind::BF16) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(p.p) + i);
      v[0] = __uint_as_float(w << 16), v[1] = __uint_as_float(w & 0xffff0000u);
    } else {
      v[0] = ld(p, i), v[1] = ld(p, i + 1);
    }
  }
  __device__ static void st2(Ptr p, int64_t i, float a, float b) {  // i even
    if (p.k == cuda::detail::Kind::F32)
      *reinterpret_cast<float2*>(static_cast<float*>(p.p) + i) = make_float2(a, b);
    else if (p.k == cuda::detail::Kind::BF16)
      *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(p.p) + i) = cuda::detail::pack_bf16x2(a, b);
    else
      cuda::detail::store1(p, i, a), cuda::detail::store1(p, i + 1, b);
  }
  __device__ static void ld8(Ptr p, int64_t i, float* v) { cuda::detail::load8(p, i, v); }  // i % 8 == 0
  __device__ static void ldg4(const float* p, float* v) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
  }
  __device__ static void stg4(float* p, const float* v) { *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]); }
  // Shared memory: 4 (16-byte aligned) or 2 (8-byte aligned) consecutive floats.
  __device__ static void sts4(float* p, const float* v) { stg4(p, v); }
  __device__ static void lds4(const float* p, float* v) { ldg4(p, v); }
  __device__ static void sts2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
  __device__ static void lds2(const float* p, float* v) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    v[0] = x.x, v[1] = x.y;
  }
};
#else
// The CPU emulation (tests). kRound: round mma inputs to tf32 as the GPU does (false: exact fp32 products, to
// check the algorithm itself tightly). kReverse: run warps, threads and lanes in reverse order, which changes
// the result of any phase in which one warp or thread reads what another writes.
template <bool kRound, bool kReverse>
struct HostExec {
  static constexpr int kLanes = 32;
  using Ptr = float*;
  template <int N>
  using R = Regs<32, N>;

  static LaneRange lanes() { return {0, 32}; }
  template <class F>
  static void for_warps(const F& f) {
    for (int w = 0; w < kWarps; ++w) f(kReverse ? kWarps - 1 - w : w);
  }
  template <class F>
  static void for_threads(int n, const F& f) {
    for (int i = 0; i < n; ++i) f(kReverse ? n - 1 - i : i);
  }
  template <class F>
  static void single(const F& f) {
    f();
  }
  static void sync() {}
  static void syncwarp() {}
  static float exp(float x) { return std::exp(x); }
  static float tf32(float x) {
    if (!kRound) return x;
    uint32_t b;
    std::memcpy(&b, &x, 4);
    b = tf32::tf32_round_bits(b);
    std::memcpy(&x, &b, 4);
    return x;
  }
  // The mma through the fragment maps: gather A (16 x 8) and B (8 x 8) from the lanes' registers (NaN where no
  // lane holds an element, so a map that misses one poisons the result), multiply in fp32 (exact for tf32
  // inputs), sum over k in order and add into each lane's C registers. Not inlined: GCC 12.2 at -O3 (ivopts)
  // miscompiled the blocked solve with this function inlined into it (clang and GCC -O2 were right).
  template <int NA, int NB>
  __attribute__((noinline)) static void mma(R<NA>& acc, int ai, const R<4>& a, const R<NB>& b, int bi) {
    float A[16][8], B[8][8];
    for (auto& r : A)
      for (float& x : r) x = NAN;
    for (auto& r : B)
      for (float& x : r) x = NAN;
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) A[frag_a_row(l, i)][frag_a_col(l, i)] = a[l][i];
      for (int i = 0; i < 2; ++i) B[frag_b_row(l, i)][frag_b_col(l)] = b[l][bi + i];
    }
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        const int r = frag_c_row(l, i), c = frag_c_col(l, i);
        float s = 0.f;
        for (int k = 0; k < 8; ++k) s += A[r][k] * B[k][c];
        acc[l][ai + i] += s;
      }
  }
  template <int N>
  static void xor_sum(R<N>& v, int i, int mask) {
    float old[32];
    for (int l = 0; l < 32; ++l) old[l] = v[l][i];
    for (int l = 0; l < 32; ++l) v[l][i] = old[l] + old[l ^ mask];
  }
  static float ld(Ptr p, int64_t i) { return p[i]; }
  static void ld2(Ptr p, int64_t i, float* v) { v[0] = p[i], v[1] = p[i + 1]; }
  static void st2(Ptr p, int64_t i, float a, float b) { p[i] = a, p[i + 1] = b; }
  static void ld8(Ptr p, int64_t i, float* v) {
    for (int u = 0; u < 8; ++u) v[u] = p[i + u];
  }
  static void ldg4(const float* p, float* v) {
    for (int u = 0; u < 4; ++u) v[u] = p[u];
  }
  static void stg4(float* p, const float* v) {
    for (int u = 0; u < 4; ++u) p[u] = v[u];
  }
  static void sts4(float* p, const float* v) { stg4(p, v); }
  static void lds4(const float* p, float* v) { ldg4(p, v); }
  static void sts2(float* p, float a, float b) { p[0] = a, p[1] = b; }
  static void lds2(const float* p, float* v) { v[0] = p[0], v[1] = p[1]; }
};
#endif

// ---- warp tiles ----------------------------------------------------------------------------------------------

template <class X, int N>
PG_GDN_FN void zero(typename X::template R<N>& acc) {
  for (int lane : X::lanes()) {
    PG_UNROLL
    for (int i = 0; i < N; ++i) acc[lane][i] = 0.f;
  }
}

// acc (16 x 8*NT: rows m0.., cols n0..) += A(m, k) B(k, n) summed over k in [k0, k1) (multiples of 8 in
// [0, 64]); only the first ntc n-tiles (a warp-uniform count) are computed. A(m, k) and B(k, n) return the
// logical operands in fp32; they are rounded to tf32 here. The k loop is unrolled over all of [0, 64) with a
// uniform skip, so that address arithmetic that does not depend on k can be hoisted.
template <class X, int NT, class FA, class FB>
PG_GDN_FN void warp_mma(typename X::template R<4 * NT>& acc, int ntc, int m0, int n0, int k0, int k1, const FA& A,
                        const FB& B) {
  PG_UNROLL
  for (int k = 0; k < kC; k += 8) {
    if (k < k0 || k >= k1) continue;
    typename X::template R<4> a;
    typename X::template R<2 * NT> b;
    for (int lane : X::lanes()) {
      PG_UNROLL
      for (int i = 0; i < 4; ++i) a[lane][i] = X::tf32(A(m0 + frag_a_row(lane, i), k + frag_a_col(lane, i)));
      PG_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        if (nt < ntc) {
          PG_UNROLL
          for (int i = 0; i < 2; ++i)
            b[lane][2 * nt + i] = X::tf32(B(k + frag_b_row(lane, i), n0 + 8 * nt + frag_b_col(lane)));
        }
    }
    PG_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      if (nt < ntc) X::mma(acc, 4 * nt, a, b, 2 * nt);
  }
}

// Visits the accumulator as pairs of adjacent columns: f(lane, r, c, v0, v1) for (r, c) and (r, c + 1), c even,
// for the first ntc n-tiles. f may modify v0, v1.
template <class X, int NT, class F>
PG_GDN_FN void warp_pairs(typename X::template R<4 * NT>& acc, int ntc, int m0, int n0, const F& f) {
  for (int lane : X::lanes()) {
    PG_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      if (nt < ntc) {
        PG_UNROLL
        for (int hf = 0; hf < 2; ++hf)
          f(lane, m0 + frag_c_row(lane, 2 * hf), n0 + 8 * nt + frag_c_col(lane, 2 * hf), acc[lane][4 * nt + 2 * hf],
            acc[lane][4 * nt + 2 * hf + 1]);
      }
  }
}

// acc = the tile's values at the accumulator's positions (times scale).
template <class X, int NT>
PG_GDN_FN void warp_load(typename X::template R<4 * NT>& acc, int m0, int n0, const float* tile, float scale) {
  warp_pairs<X, NT>(acc, NT, m0, n0, [&](int, int r, int c, float& v0, float& v1) {
    float t[2];
    X::lds2(tile + tile_at(r, c), t);
    v0 = scale * t[0], v1 = scale * t[1];
  });
}
template <class X, int NT>
PG_GDN_FN void warp_store(typename X::template R<4 * NT>& acc, int ntc, int m0, int n0, float* tile) {
  warp_pairs<X, NT>(acc, ntc, m0, n0, [&](int, int r, int c, float& v0, float& v1) { X::sts2(tile + tile_at(r, c), v0, v1); });
}

// Row sums over the warp tile's columns of val(r, c, v) (v the accumulator value at (r, c)): written to out[r]
// for the tile's 16 rows (one lane per row). The quad of lanes sharing a row reduces by xor-shuffles.
template <class X, int NT, class F>
PG_GDN_FN void warp_row_sums(typename X::template R<4 * NT>& acc, int ntc, int m0, int n0, const F& val, float* out) {
  typename X::template R<2> s;  // rows g, g + 8 (register indices stay compile-time: no local memory)
  zero<X, 2>(s);
  for (int lane : X::lanes()) {
    PG_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      if (nt < ntc) {
        PG_UNROLL
        for (int hf = 0; hf < 2; ++hf) {
          const int r = m0 + frag_c_row(lane, 2 * hf), c = n0 + 8 * nt + frag_c_col(lane, 2 * hf);
          s[lane][hf] += val(r, c, acc[lane][4 * nt + 2 * hf]) + val(r, c + 1, acc[lane][4 * nt + 2 * hf + 1]);
        }
      }
  }
  for (int i = 0; i < 2; ++i) {
    X::xor_sum(s, i, 1);
    X::xor_sum(s, i, 2);
  }
  for (int lane : X::lanes())
    if ((lane & 3) == 0) {
      out[m0 + (lane >> 2)] = s[lane][0];
      out[m0 + (lane >> 2) + 8] = s[lane][1];
    }
}

// Column sums over the warp tile's 16 rows of val(r, c, v): written to out[c] for the first ntc n-tiles' columns
// (lanes 0..3 write). Lanes sharing a column (same lane % 4) reduce by xor-shuffles over lane / 4.
template <class X, int NT, class F>
PG_GDN_FN void warp_col_sums(typename X::template R<4 * NT>& acc, int ntc, int m0, int n0, const F& val, float* out) {
  typename X::template R<2 * NT> s;  // (n-tile, column parity)
  zero<X, 2 * NT>(s);
  for (int lane : X::lanes()) {
    PG_UNROLL
    for (int nt = 0; nt < NT; ++nt)
      if (nt < ntc) {
        PG_UNROLL
        for (int hf = 0; hf < 2; ++hf) {
          const int r = m0 + frag_c_row(lane, 2 * hf), c = n0 + 8 * nt + frag_c_col(lane, 2 * hf);
          s[lane][2 * nt] += val(r, c, acc[lane][4 * nt + 2 * hf]);
          s[lane][2 * nt + 1] += val(r, c + 1, acc[lane][4 * nt + 2 * hf + 1]);
        }
      }
  }
  PG_UNROLL
  for (int i = 0; i < 2 * NT; ++i) {
    X::xor_sum(s, i, 4);
    X::xor_sum(s, i, 8);
    X::xor_sum(s, i, 16);
  }
  for (int lane : X::lanes())
    if (lane < 4) {
      PG_UNROLL
      for (int nt = 0; nt < NT; ++nt)
        if (nt < ntc) {
          out[n0 + 8 * nt + 2 * lane] = s[lane][2 * nt];
          out[n0 + 8 * nt + 2 * lane + 1] = s[lane][2 * nt + 1];
        }
    }
}

// ---- lower-triangular 64 x 64 outputs --------------------------------------------------------------------------
// A product whose result is (block-)lower triangular is cut into the warp tiles (mi, half) that touch the block
// lower triangle of 16 x 16 blocks: rows 16 mi.., columns 32 half.., the first tri_ntc n-tiles. Listed with the
// full tiles (4 n-tiles) first and the half tiles (2) last, which spreads them better over the warps.
constexpr int kTriJobs = 6;
PG_GDN_FN int tri_mi(int j) { return j < 4 ? (j == 0 ? 1 : j == 1 ? 2 : 3) : (j == 4 ? 0 : 2); }
PG_GDN_FN int tri_half(int j) { return j == 3 || j == 5 ? 1 : 0; }
PG_GDN_FN int tri_ntc(int j) {
  const int n = 2 * tri_mi(j) + 2 - 4 * tri_half(j);
  return n < kNT ? n : kNT;
}

// ---- chunk plumbing --------------------------------------------------------------------------------------------

// The chunk's tiles and vectors (the forward's and the backward's shared memory both have them).
struct Chunk {
  float *S0, *Q, *K, *U, *Ak, *P, *Vt;  // Vt: the backward only (null in the forward)
  float* Tc;                            // 16 x 64: the diagonal blocks' inverses, Tinv_I at columns 16 I..
  float *gc, *bt, *eb, *ee;             // cumulative log decay, beta, exp(gc), exp(gc_last - gc)
};

struct Rows {  // token t0 + r of (b, h): its (B, T, H) row, and the offset of its 64 values in (B, T, H, 64)
  int64_t T, H, b, h;
  int t0;
  PG_GDN_FN int64_t row(int r) const { return (b * T + t0 + r) * H + h; }
  PG_GDN_FN int64_t operator()(int r) const { return row(r) * kC; }
};

// A 64 x 64 activation tile (rows r < L of the chunk; zeros below) into shared memory.
template <class X>
PG_GDN_FN void load_tile(float* tile, typename X::Ptr p, const Rows& rows, int L) {
  X::for_threads(kC * 8, [&](int x) {
    const int r = x >> 3, c = (x & 7) * 8;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (r < L) X::ld8(p, rows(r) + c, v);
    X::sts4(tile + tile_at(r, c), v);
    X::sts4(tile + tile_at(r, c + 4), v + 4);
  });
}

// A dense (Dk, Dv) f32 state to and from a tile; src == nullptr loads zeros.
template <class X>
PG_GDN_FN void load_state(float* tile, const float* src) {
  X::for_threads(kTileFloats / 4, [&](int x) {
    const int r = x >> 4, c = (x & 15) * 4;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (src) X::ldg4(src + 4 * x, v);
    X::sts4(tile + tile_at(r, c), v);
  });
}
template <class X>
PG_GDN_FN void store_state(float* dst, const float* tile) {
  X::for_threads(kTileFloats / 4, [&](int x) {
    const int r = x >> 4, c = (x & 15) * 4;
    float v[4];
    X::lds4(tile + tile_at(r, c), v);
    X::stg4(dst + 4 * x, v);
  });
}

// The chunk's g and beta (zeros past L), and gc = cumsum(g) in the order of the CPU op (one thread: the
// log decays then match the CPU's bit for bit). Rows past L keep gc = gc[L - 1].
template <class X>
PG_GDN_FN void load_gates(const Chunk& ch, const float* g, const float* beta, const Rows& rows, int L) {
  X::for_threads(kC, [&](int r) { ch.bt[r] = r < L ? beta[rows.row(r)] : 0.f; });
  X::single([&] {
    float gv[kC];
    PG_UNROLL
    for (int r = 0; r < kC; ++r) gv[r] = r < L ? g[rows.row(r)] : 0.f;
    float acc = 0.f;
    PG_UNROLL
    for (int r = 0; r < kC; ++r) {
      acc += gv[r];
      ch.gc[r] = acc;
    }
  });
}

// eb = exp(gc), ee = exp(gc_last - gc) (read after the next barrier).
template <class X>
PG_GDN_FN void decays(const Chunk& ch) {
  X::for_threads(kC, [&](int r) {
    ch.eb[r] = X::exp(ch.gc[r]);
    ch.ee[r] = X::exp(ch.gc[kC - 1] - ch.gc[r]);
  });
}

// The chunk's state-independent products and the right-hand side, as 20 warp jobs:
//   8 x  R = diag(beta) (V - diag(b) K S0)  into U (and Vt = V - diag(b) K S0 into ch.Vt when kept)
//   6 x  Ak = Gamma o (K K^T), strictly lower (zeros on and above the diagonal inside the tiles)
//   6 x  P  = Gamma o (Q K^T), lower with the diagonal
// v: the chunk's values (global). Gamma_rs = exp(gc_r - gc_s) is computed per element for s <= r only.
template <class X>
PG_GDN_FN void chunk_products(const Chunk& ch, typename X::Ptr v, const Rows& rows, int L) {
  X::for_warps([&](int w) {
    for (int j = w; j < 8 + 2 * kTriJobs; j += kWarps) {
      typename X::template R<4 * kNT> acc;
      zero<X, 4 * kNT>(acc);
      if (j < 8) {
        const int m0 = 16 * (j >> 1), n0 = 32 * (j & 1);
        warp_mma<X, kNT>(acc, kNT, m0, n0, 0, kC, [&](int m, int k) { return ch.K[tile_at(m, k)]; },
                         [&](int k, int n) { return ch.S0[tile_at(k, n)]; });
        warp_pairs<X, kNT>(acc, kNT, m0, n0, [&](int, int r, int c, float& x0, float& x1) {
          float vt[2] = {0.f, 0.f};
          if (r < L) {
            X::ld2(v, rows(r) + c, vt);
            const float b = X::exp(ch.gc[r]);
            vt[0] -= b * x0, vt[1] -= b * x1;
          }
          if (ch.Vt) X::sts2(ch.Vt + tile_at(r, c), vt[0], vt[1]);
          X::sts2(ch.U + tile_at(r, c), ch.bt[r] * vt[0], ch.bt[r] * vt[1]);
        });
      } else {
        // jobs 8..13: the full tiles of Ak then P; 14..19: the half tiles of Ak then P (balance, see kTriJobs).
        const int t = j - 8;
        const bool isP = t < 8 ? t >= 4 : t >= 10;
        const int tj = t < 8 ? (t & 3) : 4 + ((t - 8) & 1);
        const int m0 = 16 * tri_mi(tj), n0 = 32 * tri_half(tj), ntc = tri_ntc(tj);
        const float* lhs = isP ? ch.Q : ch.K;
        warp_mma<X, kNT>(acc, ntc, m0, n0, 0, kC, [&](int m, int k) { return lhs[tile_at(m, k)]; },
                         [&](int k, int n) { return ch.K[tile_at(n, k)]; });
        float* out = isP ? ch.P : ch.Ak;
        warp_pairs<X, kNT>(acc, ntc, m0, n0, [&](int, int r, int c, float& x0, float& x1) {
          const int d = isP ? 0 : 1;  // keep s <= r - d
          const float y0 = c <= r - d ? X::exp(ch.gc[r] - ch.gc[c]) * x0 : 0.f;
          const float y1 = c + 1 <= r - d ? X::exp(ch.gc[r] - ch.gc[c + 1]) * x1 : 0.f;
          X::sts2(out + tile_at(r, c), y0, y1);
        });
      }
    }
  });
}

// Tinv_I = (I + A_II)^-1 for the four 16 x 16 diagonal blocks of A = diag(beta) Ak, by forward substitution, one
// column per thread (64 threads): x_r = [r == c] - sum_{s<r} A_rs x_s. Written to Tc[r][16 I + c].
template <class X>
PG_GDN_FN void diag_inverses(const Chunk& ch) {
  X::for_threads(kC, [&](int t) {
    const int base = t & ~15, c = t & 15;
    float x[16];
    PG_UNROLL
    for (int r = 0; r < 16; ++r) {
      float a = r == c ? 1.f : 0.f;
      const float br = ch.bt[base + r];
      PG_UNROLL
      for (int s = 0; s < r; ++s) a -= br * ch.Ak[tile_at(base + r, base + s)] * x[s];
      x[r] = a;
    }
    PG_UNROLL
    for (int r = 0; r < 16; ++r) ch.Tc[tile_at(r, base + c)] = x[r];
  });
}

// (I + A) U = R in place (R in U), blocked by 16 rows: W_I = R_I - A_{I,<I} U_{<I}, U_I = Tinv_I W_I. The columns
// are independent, so each warp solves its own 8 columns with warp barriers only.
template <class X>
PG_GDN_FN void forward_solve(const Chunk& ch) {
  X::for_warps([&](int w) {
    const int n0 = 8 * w;
    auto Ub = [&](int k, int n) { return ch.U[tile_at(k, n)]; };
    for (int I = 0; I < 4; ++I) {
      const int m0 = 16 * I;
      typename X::template R<4> acc;
      if (I > 0) {
        warp_load<X, 1>(acc, m0, n0, ch.U, 1.f);
        warp_mma<X, 1>(acc, 1, m0, n0, 0, m0, [&](int m, int k) { return -ch.bt[m] * ch.Ak[tile_at(m, k)]; }, Ub);
        warp_store<X, 1>(acc, 1, m0, n0, ch.U);
        X::syncwarp();
      }
      zero<X, 4>(acc);
      warp_mma<X, 1>(acc, 1, m0, n0, m0, m0 + 16, [&](int m, int k) { return ch.Tc[tile_at(m - m0, k)]; }, Ub);
      X::syncwarp();
      warp_store<X, 1>(acc, 1, m0, n0, ch.U);
      X::syncwarp();
    }
  });
}

}  // namespace pgolf::ops::gdn_tc
