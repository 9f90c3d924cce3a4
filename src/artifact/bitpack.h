#pragma once
// Bit-packing of signed integer codes: each value's low `bits` bits (two's complement) are written
// LSB-first into a little-endian bit stream; the last byte's unused high bits are zero.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pgolf::artifact {

size_t packed_size(size_t count, int bits);
// Every value must lie in [-2^(bits-1), 2^(bits-1) - 1].
std::vector<uint8_t> pack_signed(std::span<const int8_t> values, int bits);
// Throws naming `what` when the byte count is wrong or the padding bits are not zero.
std::vector<int8_t> unpack_signed(std::span<const uint8_t> packed, int bits, size_t count, const std::string& what);

}  // namespace pgolf::artifact
