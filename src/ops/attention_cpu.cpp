#include "ops/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu_threads.h"
#include "ops/cpu_util.h"

// The row kernels are compiled twice, for baseline x86-64 and for x86-64-v3 (AVX2 + FMA), and the
// loader picks one at startup: portable binaries still get 8-wide FMAs on the machines that have them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PGOLF_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PGOLF_SIMD_CLONES
#endif

namespace pgolf::ops::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// With bf16 tensors the GPU flash kernels feed P (to P.V and dV) and dS (to dQ, dK) to the tensor cores in
// bf16; the CPU op rounds them the same way, so a bf16 CPU model carries the GPU's precision, not better
// (docs/GDN.md: the decay-gate gradients behind an attention layer showed the difference).
inline float rb(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Every mask leaves query i a contiguous key range [lo, hi] (empty when lo > hi):
// causal j <= i ; window i - window < j <= i ; documents j >= doc_start[b, i].
inline void key_range(const AttnParams& p, const int32_t* doc_row, int64_t i, int64_t T, int64_t* lo, int64_t* hi) {
  int64_t l = 0, h = T - 1;
  if (p.causal || p.window > 0) h = i;
  if (p.window > 0) l = std::max<int64_t>(l, i - p.window + 1);
  if (doc_row) l = std::max<int64_t>(l, doc_row[i]);
  *lo = l;
  *hi = h;
}

inline float attn_scale(const AttnParams& p, int64_t D) {
  return p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(D));
}

// Copies rows [k0, k0 + n) of one kv head of x (B, T, Hkv, D) to f32: `rows` (n, D) and / or
// `cols` (D, n) (transposed, so a query's scores over keys are axpys over contiguous memory).
template <class T>
void pack_kv(const T* x, int64_t b, int64_t kh, int64_t k0, int64_t n, const AttnDims& d, float* rows, float* cols) {
  for (int64_t j = 0; j < n; ++j) {
    const T* src = x + ((b * d.T + k0 + j) * d.Hkv + kh) * d.D;
    for (int64_t e = 0; e < d.D; ++e) {
      float val = ld<float>(src[e]);
      if (rows) rows[j * d.D + e] = val;
      if (cols) cols[e * n + j] = val;
    }
  }
}

// s[0, n) = sum_e a[e] * cols[e * ld + (0, n)]: dot products of a with n packed keys.
PGOLF_SIMD_CLONES void scores(const float* a, const float* cols, int64_t ld, int64_t D, int64_t n, float* s) {
  std::fill(s, s + n, 0.f);
  for (int64_t e = 0; e < D; ++e) {
    const float ae = a[e];
    const float* c = cols + e * ld;
    for (int64_t j = 0; j < n; ++j) s[j] += ae * c[j];
  }
}

// Softmax of the scores s[0, n) in place (p = exp(s - max)) then acc = sum_j p_j rows[j]; returns
// the log-sum-exp.
PGOLF_SIMD_CLONES float softmax_weighted_sum(float* s, int64_t n, const float* rows, int64_t D, float* acc, bool emu = false) {
  float m = kNegInf;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
  float l = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    l += s[j];
  }
  std::fill(acc, acc + D, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float pj = emu ? rb(s[j]) : s[j];
    const float* r = rows + j * D;
    for (int64_t e = 0; e < D; ++e) acc[e] += pj * r[e];
  }
  const float inv = 1.f / l;
  for (int64_t e = 0; e < D; ++e) acc[e] *= inv;
  return m + std::log(l);
}

// One query row of the backward over its n visible keys (packed from key k0 = 0 of the task):
// p_j = exp(scale s_j - L), ds_j = p_j (dp_j - Di) scale ; dq = sum_j ds_j k_j ; dk_j += ds_j q ;
// dv_j += p_j dout. s and dp hold q.k_j and dout.v_j on entry.
PGOLF_SIMD_CLONES void bwd_row(const float* qs, const float* dos, float Di, float L, float scale, float* s,
                               const float* dp, int64_t n, const float* krows, float* dk, float* dv, int64_t D,
                               float* dq, bool emu = false) {
  for (int64_t j = 0; j < n; ++j) {
    const float pj = std::exp(scale * s[j] - L);
    float ds = pj * (dp[j] - Di) * scale;
    s[j] = ds;
    const float pv = emu ? rb(pj) : pj;
    if (emu) ds = rb(ds);
    const float* kr = krows + j * D;
    float* dkr = dk + j * D;
    float* dvr = dv + j * D;
    for (int64_t e = 0; e < D; ++e) {
      dq[e] += ds * kr[e];
      dkr[e] += ds * qs[e];
      dvr[e] += pv * dos[e];
    }
  }
}

constexpr int64_t kQueryBlock = 64;

}  // namespace

template <class T>
void attention_forward_fast(const T* q, const T* k, const T* v, const int32_t* doc, T* out, float* lse,
                            const AttnDims& d, const AttnParams& p) {
  const float scale = attn_scale(p, d.D);
  const int64_t group = d.Hq / d.Hkv, blocks = (d.T + kQueryBlock - 1) / kQueryBlock;
  // One work item: a block of queries of every query head of one (batch, kv head).
  parallel_for(d.B * d.Hkv * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kcols, vrows, qs(d.D), acc(d.D), s(d.T);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (d.Hkv * blocks), kh = item / blocks % d.Hkv, blk = item % blocks;
      const int64_t i0 = blk * kQueryBlock, i1 = std::min(d.T, i0 + kQueryBlock);
      const int32_t* doc_row = doc ? doc + b * d.T : nullptr;
      int64_t k0 = d.T, k1 = 0;  // union of the block's key ranges, [k0, k1)
      for (int64_t i = i0; i < i1; ++i) {
        int64_t lo, hi;
        key_range(p, doc_row, i, d.T, &lo, &hi);
        if (lo > hi) continue;
        k0 = std::min(k0, lo);
        k1 = std::max(k1, hi + 1);
      }
      const int64_t nk = std::max<int64_t>(k1 - k0, 0);
      kcols.resize(static_cast<size_t>(nk * d.D));
      vrows.resize(static_cast<size_t>(nk * d.D));
      pack_kv(k, b, kh, k0, nk, d, nullptr, kcols.data());
      pack_kv(v, b, kh, k0, nk, d, vrows.data(), nullptr);
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h)
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t row = ((b * d.T + i) * d.Hq + h) * d.D;
          float* lrow = lse + (b * d.Hq + h) * d.T + i;
          int64_t lo, hi;
          key_range(p, doc_row, i, d.T, &lo, &hi);
          if (lo > hi) {  // nothing visible: zero output, lse -inf (the backward skips the row)
            for (int64_t e = 0; e < d.D; ++e) st(out[row + e], 0.f);
            *lrow = kNegInf;
            continue;
          }
          for (int64_t e = 0; e < d.D; ++e) qs[e] = scale * ld<float>(q[row + e]);
          const int64_t n = hi - lo + 1;
          scores(qs.data(), kcols.data() + (lo - k0), nk, d.D, n, s.data());
          *lrow = softmax_weighted_sum(s.data(), n, vrows.data() + (lo - k0) * d.D, d.D, acc.data(), sizeof(T) == 2);
          for (int64_t e = 0; e < d.D; ++e) st(out[row + e], acc[e]);
        }
    }
  });
}

template <class T>
void attention_backward_fast(const T* q, const T* k, const T* v, const int32_t* doc, const T* out,
                             const float* lse, const T* dout, T* dq, T* dk, T* dv, const AttnDims& d,
                             const AttnParams& p) {
  const float scale = attn_scale(p, d.D);
  const int64_t group = d.Hq / d.Hkv;
  // One work item: every query head of one (batch, kv head), so dk and dv of that kv head are
  // summed by one thread in a private buffer and stored once.
  parallel_for(d.B * d.Hkv, 1, [&](int64_t begin, int64_t end) {
    const size_t kv_n = static_cast<size_t>(d.T * d.D);
    std::vector<float> krows(kv_n), kcols(kv_n), vcols(kv_n), dk_acc(kv_n), dv_acc(kv_n);
    std::vector<float> qs(d.D), dos(d.D), dq_acc(d.D), s(d.T), dp(d.T);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / d.Hkv, kh = item % d.Hkv;
      const int32_t* doc_row = doc ? doc + b * d.T : nullptr;
      pack_kv(k, b, kh, 0, d.T, d, krows.data(), kcols.data());
      pack_kv(v, b, kh, 0, d.T, d, nullptr, vcols.data());
      std::fill(dk_acc.begin(), dk_acc.end(), 0.f);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.f);
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h)
        for (int64_t i = 0; i < d.T; ++i) {
          const int64_t row = ((b * d.T + i) * d.Hq + h) * d.D;
          std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
          int64_t lo, hi;
          key_range(p, doc_row, i, d.T, &lo, &hi);
          const float L = lse[(b * d.Hq + h) * d.T + i];
          if (lo <= hi && std::isfinite(L)) {
            float Di = 0.f;
            for (int64_t e = 0; e < d.D; ++e) {
              qs[e] = ld<float>(q[row + e]);
              dos[e] = ld<float>(dout[row + e]);
              Di += dos[e] * ld<float>(out[row + e]);
            }
            const int64_t n = hi - lo + 1;
            scores(qs.data(), kcols.data() + lo, d.T, d.D, n, s.data());
            scores(dos.data(), vcols.data() + lo, d.T, d.D, n, dp.data());
            bwd_row(qs.data(), dos.data(), Di, L, scale, s.data(), dp.data(), n, krows.data() + lo * d.D,
                    dk_acc.data() + lo * d.D, dv_acc.data() + lo * d.D, d.D, dq_acc.data(), sizeof(T) == 2);
          }
          for (int64_t e = 0; e < d.D; ++e) st(dq[row + e], dq_acc[e]);
        }
      for (int64_t j = 0; j < d.T; ++j) {
        const int64_t dst = ((b * d.T + j) * d.Hkv + kh) * d.D;
        for (int64_t e = 0; e < d.D; ++e) {
          st(dk[dst + e], dk_acc[j * d.D + e]);
          st(dv[dst + e], dv_acc[j * d.D + e]);
        }
      }
    }
  });
}

template void attention_forward_fast<float>(const float*, const float*, const float*, const int32_t*, float*, float*,
                                            const AttnDims&, const AttnParams&);
template void attention_forward_fast<bf16>(const bf16*, const bf16*, const bf16*, const int32_t*, bf16*, float*,
                                           const AttnDims&, const AttnParams&);
template void attention_backward_fast<float>(const float*, const float*, const float*, const int32_t*, const float*,
                                             const float*, const float*, float*, float*, float*, const AttnDims&,
                                             const AttnParams&);
template void attention_backward_fast<bf16>(const bf16*, const bf16*, const bf16*, const int32_t*, const bf16*,
                                            const float*, const bf16*, bf16*, bf16*, bf16*, const AttnDims&,
                                            const AttnParams&);

}  // namespace pgolf::ops::cpu
