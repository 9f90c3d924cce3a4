#pragma once
// Document boundaries of a batch of token rows (TECHNIQUES.md §5.15): every document starts with BOS.
#include "core/tensor.h"

namespace pgolf::ops {

// ids, out: (B, T) i32. out[b, t] = the largest j <= t with ids[b, j] == bos, or 0 when the row has
// no BOS up to t (the row's first, partial document). This is attention's doc_start input: query t
// sees keys j >= out[b, t] only, so nothing attends across a BOS. The result is non-decreasing along a row
// (the CUDA attention backward relies on it to bound the queries of a key block).
// max_len > 0 also cuts every document into segments of at most max_len tokens counted from its start
// (the records' varlen packing, §2.5: "documents longer than 2048 are cut into 2048-token segments"):
// out[b, t] = s + floor((t - s) / max_len) * max_len with s the BOS start above.
void doc_starts(const Tensor& ids, int bos, const Tensor& out, int64_t max_len = 0);

#if PGOLF_CUDA
namespace cuda {
void doc_starts(const Tensor& ids, int bos, const Tensor& out, int64_t max_len);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
