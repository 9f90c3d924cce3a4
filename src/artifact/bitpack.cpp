#include "artifact/bitpack.h"

#include "core/error.h"

namespace pgolf::artifact {

size_t packed_size(size_t count, int bits) { return (count * static_cast<size_t>(bits) + 7) / 8; }

std::vector<uint8_t> pack_signed(std::span<const int8_t> values, int bits) {
  PG_CHECK(bits >= 1 && bits <= 8, "pack_signed: bits {} not in [1, 8]", bits);
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  const uint32_t mask = (1u << bits) - 1u;
  std::vector<uint8_t> out(packed_size(values.size(), bits), 0);
  uint64_t bitpos = 0;
  for (size_t i = 0; i < values.size(); ++i, bitpos += static_cast<uint64_t>(bits)) {
    const int v = values[i];
    PG_CHECK(v >= lo && v <= hi, "pack_signed: value {} at index {} does not fit in {} bits", v, i, bits);
    const uint32_t u = static_cast<uint32_t>(v) & mask;
    const size_t byte = static_cast<size_t>(bitpos >> 3);
    const unsigned shift = static_cast<unsigned>(bitpos & 7);
    out[byte] = static_cast<uint8_t>(out[byte] | (u << shift));
    if (shift + static_cast<unsigned>(bits) > 8) out[byte + 1] = static_cast<uint8_t>(out[byte + 1] | (u >> (8 - shift)));
  }
  return out;
}

std::vector<int8_t> unpack_signed(std::span<const uint8_t> packed, int bits, size_t count, const std::string& what) {
  PG_CHECK(bits >= 1 && bits <= 8, "{}: packed bits {} not in [1, 8]", what, bits);
  PG_CHECK(packed.size() == packed_size(count, bits), "{}: {} packed bytes for {} int{} values (expected {})", what,
           packed.size(), count, bits, packed_size(count, bits));
  const uint32_t mask = (1u << bits) - 1u, sign = 1u << (bits - 1);
  std::vector<int8_t> out(count);
  uint64_t bitpos = 0;
  for (size_t i = 0; i < count; ++i, bitpos += static_cast<uint64_t>(bits)) {
    const size_t byte = static_cast<size_t>(bitpos >> 3);
    const unsigned shift = static_cast<unsigned>(bitpos & 7);
    uint32_t u = static_cast<uint32_t>(packed[byte]) >> shift;
    if (shift + static_cast<unsigned>(bits) > 8) u |= static_cast<uint32_t>(packed[byte + 1]) << (8 - shift);
    u &= mask;
    out[i] = static_cast<int8_t>(static_cast<int>(u ^ sign) - static_cast<int>(sign));  // sign-extend
  }
  const unsigned used = static_cast<unsigned>((count * static_cast<size_t>(bits)) & 7);
  if (used != 0)
    PG_CHECK((packed.back() >> used) == 0, "{}: nonzero padding bits in the last packed byte", what);
  return out;
}

}  // namespace pgolf::artifact
