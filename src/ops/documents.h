#pragma once
// Document boundaries of a batch of token rows (TECHNIQUES.md §5.15): every document starts with BOS.
#include "core/tensor.h"

namespace pgolf::ops {

// ids, out: (B, T) i32. out[b, t] = the largest j <= t with ids[b, j] == bos, or 0 when the row has
// no BOS up to t (the row's first, partial document). This is attention's doc_start input: query t
// sees keys j >= out[b, t] only, so nothing attends across a BOS.
void doc_starts(const Tensor& ids, int bos, const Tensor& out);

#if PGOLF_CUDA
namespace cuda {
void doc_starts(const Tensor& ids, int bos, const Tensor& out);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
