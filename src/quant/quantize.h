#pragma once
// Per-row symmetric integer quantization (TECHNIQUES.md §7): a matrix W (rows, cols) becomes codes
// q in [-qmax, qmax] (qmax = 2^(bits-1) - 1) and one fp16 scale per row, W ≈ q · s_row.
// Scales are rounded to fp16 *before* the codes are computed, so dequantize() reproduces exactly
// what the quantizer assumed, and what the artifact stores.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pgolf::quant {

struct QuantizedMatrix {
  int64_t rows = 0, cols = 0;
  int bits = 8;
  std::vector<int8_t> codes;     // (rows, cols) row-major, each in [-qmax, qmax]
  std::vector<uint16_t> scales;  // (rows) IEEE fp16 bits, finite and > 0

  int qmax() const;
  float scale(int64_t row) const;
  // Throws naming `what` when sizes, code range or scales are inconsistent.
  void validate(const std::string& what) const;
};

int qmax_for_bits(int bits);  // bits in [2, 8]

enum class ClipKind : uint8_t { RowMax, Percentile, SdClip };

// How the per-row clip value (the largest magnitude that maps to ±qmax) is chosen.
struct ClipRule {
  ClipKind kind = ClipKind::RowMax;
  double value = 0;  // Percentile: quantile of |w_row| in (0, 1]; SdClip: k in clip = k·std(row)

  static ClipRule row_max() { return {ClipKind::RowMax, 1.0}; }
  static ClipRule percentile(double q) { return {ClipKind::Percentile, q}; }
  static ClipRule sd(double k) { return {ClipKind::SdClip, k}; }
  std::string describe() const;  // "rowmax", "pct(0.9999)", "sd(12.85)"
};

// The baseline's int8 clip: the 99.99984th percentile of |w| per row.
inline constexpr double kBaselineClipQuantile = 0.9999984;

// Per-row clip values (linear-interpolated quantile like torch.quantile; std is the population std).
std::vector<float> row_clips(std::span<const float> w, int64_t rows, int64_t cols, const ClipRule& rule);

// s = max(clip / qmax, min_scale) rounded to fp16; a zero or underflowing scale becomes the smallest
// positive fp16 so division stays defined; overflow is clamped to the largest finite fp16.
std::vector<uint16_t> scales_from_clips(std::span<const float> clips, int bits, float min_scale = 0.f);

// Round-to-nearest (ties to even) with given fp16 scales; values beyond the clip saturate at ±qmax.
QuantizedMatrix quantize_rtn_with_scales(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                                         std::vector<uint16_t> scales);
QuantizedMatrix quantize_rtn(std::span<const float> w, int64_t rows, int64_t cols, int bits, const ClipRule& rule,
                             float min_scale = 0.f);

// The code for one value at scale s (shared by RTN and GPTQ so both round identically).
inline int8_t quantize_value(double w, double s, int qmax);

std::vector<float> dequantize(const QuantizedMatrix& q);
void dequantize_into(const QuantizedMatrix& q, std::span<float> out);  // out: rows*cols

double squared_error(std::span<const float> a, std::span<const float> b);

// GPTQ-lite (§7.4): try each clip rule with RTN, keep the lowest whole-matrix squared error.
struct ClipSearchResult {
  ClipRule rule;
  QuantizedMatrix q;
  double sse = 0;
};
std::vector<ClipRule> gptq_lite_candidates();  // quantiles 0.999, 0.9995, 0.9999, 0.99999, row max
ClipSearchResult clip_search_rtn(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                                 std::span<const ClipRule> candidates, float min_scale = 0.f);

// fp16 passthrough of small tensors (§7.1: every other float tensor with <= 65,536 elements).
inline constexpr int64_t kPassthroughMaxElements = 65536;
std::vector<uint16_t> to_f16(std::span<const float> x);
std::vector<float> from_f16(std::span<const uint16_t> h);

// ---- inline definitions ----
inline int8_t quantize_value(double w, double s, int qmax) {
  double r = __builtin_nearbyint(w / s);
  if (r > qmax) r = qmax;
  if (r < -qmax) r = -qmax;
  if (r != r) r = 0;  // NaN weight: store 0 rather than UB in the cast
  return static_cast<int8_t>(r);
}

}  // namespace pgolf::quant
