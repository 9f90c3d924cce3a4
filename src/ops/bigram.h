#pragma once
// BigramHash bucket ids (TECHNIQUES.md §5.9, the R:2026-03-25+ hash): within each row of length T,
//   out[b, 0] = buckets - 1 ;  out[b, t] = (36313 ids[b, t] XOR 27191 ids[b, t-1]) mod (buckets - 1), t >= 1.
// The optional trigram ids (§5.9, "into the same table") extend it by one token:
//   out[b, 0] = out[b, 1] = buckets - 1 ;
//   out[b, t] = (36313 ids[b, t] XOR 27191 ids[b, t-1] XOR 51497 ids[b, t-2]) mod (buckets - 1), t >= 2.
// The spec gives only the formula; positions without a t-2 inside the row take the bigram's sentinel bucket,
// as position 0 does for the bigram.
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// ids, out: (B, T) i32 (ids >= 0) ; buckets >= 2. No gradient (the ids are data).
void bigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out);
// Same contract, trigram ids.
void trigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out);

namespace ref {
int32_t bigram_bucket(int32_t prev, int32_t cur, bool first, int64_t buckets);
// first: t < 2 in the row (prev2 / prev are then ignored).
int32_t trigram_bucket(int32_t prev2, int32_t prev, int32_t cur, bool first, int64_t buckets);
}  // namespace ref

#if PGOLF_CUDA
namespace cuda {
void bigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out);
void trigram_hash(const Tensor& ids, int64_t buckets, const Tensor& out);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
