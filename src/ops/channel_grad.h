#pragma once
// The backward of a per-channel scaled term, out = ... + s * f (s: (C) f32, f: (N, C)), in one pass
// over dy instead of two (a column reduction for ds, then an elementwise pass for df) plus, when f
// already holds a gradient, a temporary and an add. Used by add_mul_channel (the attn/mlp scales)
// and mix_channel (resid_mix) in the tape:
//   ds[c] += sum_n dy[n, c] f[n, c]          (ACCUMULATED, f32)
//   df     = s * dy   or   df += s * dy     (accumulate), skipped when df is undefined
#include "core/tensor.h"

namespace pgolf::ops {

// dy, f, df: (N, C) f32|bf16 (any mix); s, ds: (C) f32. df may alias neither dy nor f.
void channel_scale_backward(const Tensor& dy, const Tensor& s, const Tensor& f, const Tensor& ds, const Tensor& df,
                            bool accumulate);

#if PGOLF_CUDA
namespace cuda {
void channel_scale_backward(const Tensor& dy, const Tensor& s, const Tensor& f, const Tensor& ds, const Tensor& df,
                            bool accumulate);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
