#include "quant/quantize.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace pgolf::quant {

namespace {

constexpr uint16_t kF16MinPositive = 0x0001;  // 2^-24
constexpr uint16_t kF16MaxFinite = 0x7bff;    // 65504

void check_matrix(std::span<const float> w, int64_t rows, int64_t cols, const char* op) {
  PG_CHECK(rows >= 0 && cols >= 0, "{}: negative shape ({}, {})", op, rows, cols);
  PG_CHECK(static_cast<int64_t>(w.size()) == rows * cols, "{}: {} values for a ({}, {}) matrix", op, w.size(), rows,
           cols);
}

// Linear-interpolated quantile of |row| (torch.quantile's default), using partial selection.
float abs_quantile(std::vector<float>& a, double q) {
  const size_t n = a.size();
  if (n == 0) return 0.f;
  const double pos = q * static_cast<double>(n - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, n - 1);
  std::nth_element(a.begin(), a.begin() + static_cast<ptrdiff_t>(lo), a.end());
  const double vlo = a[lo];
  double vhi = vlo;
  if (hi != lo) vhi = *std::min_element(a.begin() + static_cast<ptrdiff_t>(lo) + 1, a.end());
  return static_cast<float>(vlo + (vhi - vlo) * (pos - static_cast<double>(lo)));
}

}  // namespace

int qmax_for_bits(int bits) {
  PG_CHECK(bits >= 2 && bits <= 8, "quantization bits must be in [2, 8], got {}", bits);
  return (1 << (bits - 1)) - 1;
}

int QuantizedMatrix::qmax() const { return qmax_for_bits(bits); }

float QuantizedMatrix::scale(int64_t row) const { return f16_bits_to_f32(scales[static_cast<size_t>(row)]); }

void QuantizedMatrix::validate(const std::string& what) const {
  PG_CHECK(bits >= 2 && bits <= 8, "{}: quantization bits {} not in [2, 8]", what, bits);
  PG_CHECK(rows >= 0 && cols >= 0, "{}: negative shape ({}, {})", what, rows, cols);
  PG_CHECK(static_cast<int64_t>(codes.size()) == rows * cols, "{}: {} codes for a ({}, {}) matrix", what,
           codes.size(), rows, cols);
  PG_CHECK(static_cast<int64_t>(scales.size()) == rows, "{}: {} scales for {} rows", what, scales.size(), rows);
  const int qm = qmax();
  for (size_t i = 0; i < codes.size(); ++i) {
    PG_CHECK(codes[i] >= -qm && codes[i] <= qm, "{}: code {} at index {} outside [-{}, {}] for int{}", what,
             static_cast<int>(codes[i]), i, qm, qm, bits);
  }
  for (size_t r = 0; r < scales.size(); ++r) {
    const float s = f16_bits_to_f32(scales[r]);
    PG_CHECK(std::isfinite(s) && s > 0.f, "{}: row {} has scale {} (must be finite and > 0)", what, r, s);
  }
}

std::string ClipRule::describe() const {
  switch (kind) {
    case ClipKind::RowMax: return "rowmax";
    case ClipKind::Percentile: return fmt::format("pct({})", value);
    case ClipKind::SdClip: return fmt::format("sd({})", value);
  }
  return "?";
}

std::vector<float> row_clips(std::span<const float> w, int64_t rows, int64_t cols, const ClipRule& rule) {
  check_matrix(w, rows, cols, "row_clips");
  if (rule.kind == ClipKind::Percentile)
    PG_CHECK(rule.value > 0 && rule.value <= 1, "row_clips: quantile {} not in (0, 1]", rule.value);
  if (rule.kind == ClipKind::SdClip) PG_CHECK(rule.value > 0, "row_clips: SDClip k must be > 0, got {}", rule.value);
  std::vector<float> clips(static_cast<size_t>(rows), 0.f);
  std::vector<float> scratch;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.data() + r * cols;
    float clip = 0.f;
    switch (rule.kind) {
      case ClipKind::RowMax:
        for (int64_t c = 0; c < cols; ++c) clip = std::max(clip, std::fabs(row[c]));
        break;
      case ClipKind::Percentile:
        scratch.resize(static_cast<size_t>(cols));
        for (int64_t c = 0; c < cols; ++c) scratch[static_cast<size_t>(c)] = std::fabs(row[c]);
        clip = abs_quantile(scratch, rule.value);
        break;
      case ClipKind::SdClip: {
        double sum = 0, sum2 = 0;
        for (int64_t c = 0; c < cols; ++c) sum += row[c];
        const double mean = cols ? sum / static_cast<double>(cols) : 0.0;
        for (int64_t c = 0; c < cols; ++c) sum2 += (row[c] - mean) * (row[c] - mean);
        const double sd = cols ? std::sqrt(sum2 / static_cast<double>(cols)) : 0.0;
        clip = static_cast<float>(rule.value * sd);
        break;
      }
    }
    clips[static_cast<size_t>(r)] = clip;
  }
  return clips;
}

std::vector<uint16_t> scales_from_clips(std::span<const float> clips, int bits, float min_scale) {
  const int qm = qmax_for_bits(bits);
  std::vector<uint16_t> out(clips.size());
  for (size_t r = 0; r < clips.size(); ++r) {
    float s = std::max(clips[r] / static_cast<float>(qm), min_scale);
    uint16_t h;
    if (!(s < 65504.f)) {
      h = kF16MaxFinite;  // also catches NaN/inf clips from non-finite weights
    } else {
      h = f32_to_f16_bits(s);
      if (f16_bits_to_f32(h) <= 0.f) h = kF16MinPositive;
    }
    out[r] = h;
  }
  return out;
}

QuantizedMatrix quantize_rtn_with_scales(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                                         std::vector<uint16_t> scales) {
  check_matrix(w, rows, cols, "quantize_rtn");
  PG_CHECK(static_cast<int64_t>(scales.size()) == rows, "quantize_rtn: {} scales for {} rows", scales.size(), rows);
  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.bits = bits;
  q.scales = std::move(scales);
  q.codes.resize(static_cast<size_t>(rows * cols));
  const int qm = qmax_for_bits(bits);
  for (int64_t r = 0; r < rows; ++r) {
    const double s = q.scale(r);
    for (int64_t c = 0; c < cols; ++c)
      q.codes[static_cast<size_t>(r * cols + c)] = quantize_value(w[static_cast<size_t>(r * cols + c)], s, qm);
  }
  return q;
}

QuantizedMatrix quantize_rtn(std::span<const float> w, int64_t rows, int64_t cols, int bits, const ClipRule& rule,
                             float min_scale) {
  std::vector<float> clips = row_clips(w, rows, cols, rule);
  return quantize_rtn_with_scales(w, rows, cols, bits, scales_from_clips(clips, bits, min_scale));
}

void dequantize_into(const QuantizedMatrix& q, std::span<float> out) {
  PG_CHECK(static_cast<int64_t>(out.size()) == q.rows * q.cols, "dequantize: output has {} values, matrix ({}, {})",
           out.size(), q.rows, q.cols);
  PG_CHECK(static_cast<int64_t>(q.codes.size()) == q.rows * q.cols && static_cast<int64_t>(q.scales.size()) == q.rows,
           "dequantize: inconsistent quantized matrix ({} codes, {} scales for ({}, {}))", q.codes.size(),
           q.scales.size(), q.rows, q.cols);
  for (int64_t r = 0; r < q.rows; ++r) {
    const float s = q.scale(r);
    for (int64_t c = 0; c < q.cols; ++c) {
      const size_t i = static_cast<size_t>(r * q.cols + c);
      out[i] = static_cast<float>(q.codes[i]) * s;
    }
  }
}

std::vector<float> dequantize(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize_into(q, out);
  return out;
}

double squared_error(std::span<const float> a, std::span<const float> b) {
  PG_CHECK(a.size() == b.size(), "squared_error: sizes {} vs {}", a.size(), b.size());
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    e += d * d;
  }
  return e;
}

std::vector<ClipRule> gptq_lite_candidates() {
  return {ClipRule::percentile(0.999), ClipRule::percentile(0.9995), ClipRule::percentile(0.9999),
          ClipRule::percentile(0.99999), ClipRule::row_max()};
}

ClipSearchResult clip_search_rtn(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                                 std::span<const ClipRule> candidates, float min_scale) {
  PG_CHECK(!candidates.empty(), "clip_search_rtn: no clip candidates");
  ClipSearchResult best;
  bool have = false;
  std::vector<float> deq(w.size());
  for (const ClipRule& rule : candidates) {
    QuantizedMatrix q = quantize_rtn(w, rows, cols, bits, rule, min_scale);
    dequantize_into(q, deq);
    const double sse = squared_error(w, deq);
    if (!have || sse < best.sse) {  // ties keep the earlier (tighter) rule
      best = ClipSearchResult{rule, std::move(q), sse};
      have = true;
    }
  }
  return best;
}

std::vector<uint16_t> to_f16(std::span<const float> x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = f32_to_f16_bits(x[i]);
  return h;
}

std::vector<float> from_f16(std::span<const uint16_t> h) {
  std::vector<float> x(h.size());
  for (size_t i = 0; i < h.size(); ++i) x[i] = f16_bits_to_f32(h[i]);
  return x;
}

}  // namespace pgolf::quant
