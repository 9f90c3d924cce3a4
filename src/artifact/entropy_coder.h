#pragma once
// "cm": pgolf's own context-mixing entropy coder for quantized code tensors (compressor id 5).
//
// A binary arithmetic coder (32-bit, carry-less) driven by adaptive bit models whose predictions are
// mixed in the logistic domain. Everything on the coding path is integer arithmetic, so encoder and
// decoder agree bit for bit on every machine. Each int8 code v of a matrix is binarised as
// zero-flag, sign, then |v| in truncated unary (the segment's max |v| ends it); the bits are
// predicted from the magnitudes already seen in the same column (earlier rows), earlier in the same
// row, the previous code and the code above. Bytes outside the declared matrices (fp16 scales, a
// caller that gives no layout) use a bitwise order-1 byte model. Stream layout and the measurements
// that chose the contexts: docs/ARTIFACT.md, "The cm coder".
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pgolf::artifact {

// One matrix of int8 codes inside the raw bytes handed to the coder: rows × cols bytes at `offset`,
// row-major as laid out there (a transposed layout simply swaps rows and cols).
struct CodeMatrix {
  uint64_t offset = 0;
  uint64_t rows = 0, cols = 0;
};

// Context features (stored in the stream, so every combination decodes); the default is what the
// measurements kept. Disabled features fix their context to 0; the coding path stays the same.
enum CmFeature : uint32_t {
  kCmColumn = 1u << 0,   // magnitude statistics of the same column in earlier rows
  kCmRow = 1u << 1,      // running magnitude of the current row
  kCmPrev = 1u << 2,     // |previous code| in the row and |code above|
  kCmShare = 1u << 3,    // bit models persist across matrices of a section (else reset per matrix)
  kCmApm = 1u << 4,      // a final adaptive probability map on (node, column bucket)
  kCmSignCtx = 1u << 5,  // signs of the previous code and of the code above as sign context
  kCmColMean = 1u << 6,  // signed mean of the column so far: sign context, and model 4 after the sign
  kCmRowMean = 1u << 7,  // the same from the signed mean of the row so far (takes precedence)
};
inline constexpr uint32_t kCmAllFeatures = 255;
inline constexpr uint32_t kCmBaseFeatures = kCmColumn | kCmRow | kCmPrev | kCmShare | kCmSignCtx;
// What compress(Compressor::Cm, ...) uses: both candidates are encoded and the smaller kept (the
// signed mean pays along the input channels: the column in row-major codes, the row in column-major).
inline constexpr uint32_t kCmCandidateFeatures[2] = {kCmBaseFeatures | kCmColMean, kCmBaseFeatures | kCmRowMean};
inline constexpr uint32_t kCmDefaultFeatures = kCmBaseFeatures | kCmColMean;

// Compresses `raw`; `matrices` must lie inside `raw`, not overlap, and be sorted by offset (checked).
// An empty list codes everything with the byte model.
std::vector<uint8_t> cm_compress(std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices,
                                 uint32_t features = kCmDefaultFeatures);
// The smallest of cm_compress over kCmCandidateFeatures (ties: the first).
std::vector<uint8_t> cm_compress_best(std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices);
// Throws naming `what` on any malformed, truncated or corrupt stream, or one that does not decode to
// exactly raw_size bytes with the stored checksum.
std::vector<uint8_t> cm_decompress(std::span<const uint8_t> packed, size_t raw_size, const std::string& what);

}  // namespace pgolf::artifact
