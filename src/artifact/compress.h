#pragma once
// The section compressors, byte-plane shuffling and the xxhash64 checksum used by the artifact.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "artifact/entropy_coder.h"

namespace pgolf::artifact {

// Values are stored in the file: never renumber.
// Cm (5) is pgolf's own context-mixing coder for code matrices (entropy_coder.h); files that use it
// carry format version 2 (format.h), so a build without it refuses them by version.
enum class Compressor : uint8_t { None = 0, Zlib9 = 1, Brotli11 = 2, Lzma9Extreme = 3, Zstd22 = 4, Cm = 5 };
inline constexpr uint8_t kMaxCompressorId = 5;
// The oldest artifact format version that may use compressor `c` (1, or 2 for cm).
uint32_t min_format_version(Compressor c);

std::string_view compressor_name(Compressor c);  // "none", "zlib-9", "brotli-11", "lzma-9e", "zstd-22", "cm"
bool parse_compressor(std::string_view name, Compressor* out);
std::vector<Compressor> all_compressors();

std::vector<uint8_t> compress(Compressor c, std::span<const uint8_t> raw);
// Same, telling cm where the int8 code matrices lie in `raw` (the other compressors ignore it).
std::vector<uint8_t> compress(Compressor c, std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices);
// Throws naming `what` unless the payload decodes to exactly raw_size bytes.
std::vector<uint8_t> decompress(Compressor c, std::span<const uint8_t> packed, size_t raw_size, const std::string& what);

// Byte planes: all bytes at offsets ≡ 0 (mod stride), then ≡ 1, ... (stride 1 = identity). Helps
// fp16/f32 data, whose high bytes are far more predictable than their low bytes.
std::vector<uint8_t> shuffle_bytes(std::span<const uint8_t> raw, int stride);
std::vector<uint8_t> unshuffle_bytes(std::span<const uint8_t> planes, int stride);

uint64_t xxh64(std::span<const uint8_t> data);

}  // namespace pgolf::artifact
