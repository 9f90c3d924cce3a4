#pragma once
// Internal: the fast f32-compute CPU attention kernels behind ops::attention_forward/backward
// (src/ops/attention.cpp checks the arguments and dispatches here). Multi-threaded over
// (batch, kv head[, query block]) through ops/cpu_threads.h; every kv head's K and V are packed
// once into contiguous f32 blocks and reused by all its query heads.
#include <cstdint>

#include "core/dtype.h"
#include "ops/attention.h"

namespace pgolf::ops::cpu {

struct AttnDims {
  int64_t B, T, Hq, Hkv, D;
};

// T is float or bf16; shapes and semantics as in ops/attention.h.
template <class T>
void attention_forward_fast(const T* q, const T* k, const T* v, const int32_t* doc_start, T* out, float* lse,
                            const AttnDims& d, const AttnParams& p);
template <class T>
void attention_backward_fast(const T* q, const T* k, const T* v, const int32_t* doc_start, const T* out,
                             const float* lse, const T* dout, T* dq, T* dk, T* dv, const AttnDims& d,
                             const AttnParams& p);

}  // namespace pgolf::ops::cpu
