#pragma once
// QAT: fake quantization with a straight-through estimator (TECHNIQUES.md §7.3).
//
// Forward (per row i of a 2-D weight W):
//   s_i  = max(clip_i / qmax, min_scale)        clip_i = max_j |W_ij| (spec) or k·std(W_i) (SDClip)
//   W_q  = clamp(round(W / s_i), qlo, qmax) · s_i     round = nearest, ties to even (f32 arithmetic)
// with qmax = 2^(bits−1) − 1 and qlo = −2^(bits−1) (the records' asymmetric [−32, 31] for int6) or
// −qmax (`symmetric`, the range the exporter uses). The records' defaults: bits 6, row max,
// min_scale 1/31 (§7.3: "s = max(rowmax|W|/31, 1/31)").
// Backward (STE): the layer used W + sg(W_q − W), so dL/dW = dL/dW_q (identity, the spec); with
// `clipped_ste` the gradient is zeroed where W/s fell outside [qlo − ½, qmax + ½] (saturated codes).
//
// The trainer-facing switch (late QAT, the parameter table) is quant/qat.h.
//
// This header is C++17 (included from fake_quant.cu).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace pgolf::quant {

struct FakeQuantSpec {
  int bits = 6;
  bool symmetric = false;      // false: codes in [−2^(b−1), 2^(b−1)−1] (spec); true: [−qmax, qmax]
  float sd_k = 0.f;            // 0: clip = row max (spec); > 0: SDClip clip = sd_k · std(row)
  float min_scale = 1.f / 31;  // the spec's floor; 0 disables it
};

// W (rows, cols) f32 -> out (same numel; f32 or bf16; may not alias W). `scales` (rows, f32), if
// defined, receives s_i. W and out on the same device (CPU, or CUDA when built with it).
// rows = W.dim(0), cols = numel / rows.
void fake_quant_forward(const Tensor& w, const Tensor& out, const FakeQuantSpec& spec, const Tensor& scales = Tensor());
// dw = dout (identity STE) or dout masked to the unsaturated range when `clipped_ste` (needs W and
// the forward's scales). dw is OVERWRITTEN; it may alias dout. All f32 except dout/dw (f32|bf16).
void fake_quant_backward(const Tensor& w, const Tensor& scales, const Tensor& dout, const Tensor& dw,
                         const FakeQuantSpec& spec, bool clipped_ste);

#if PGOLF_CUDA
namespace cuda {
void fake_quant_forward(const Tensor& w, const Tensor& out, const FakeQuantSpec& spec, const Tensor& scales);
void fake_quant_backward(const Tensor& w, const Tensor& scales, const Tensor& dout, const Tensor& dw,
                         const FakeQuantSpec& spec, bool clipped_ste);
}  // namespace cuda
#endif

}  // namespace pgolf::quant
