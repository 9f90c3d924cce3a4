#pragma once
// One tensor <-> its table entry and its byte parts. A tensor is stored as a few parts (values, or
// codes + row scales [+ LQER factors]); each part lands in some section at some offset. Parts of
// kind Codes are the large, low-entropy integer streams; everything else is "aux".
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "artifact/byte_io.h"
#include "artifact/format.h"

namespace pgolf::artifact {

// Values are stored in the file: never renumber.
enum class PartKind : uint8_t {
  Values = 1,       // F32/F16/BF16 little-endian elements, or the raw Bytes
  Codes = 2,        // IntRow codes: int8 containers, or bit-packed when the tensor's packed flag is set
  RowScales = 3,    // IntRow: rows × fp16
  LqerACodes = 4,   // (rows, rank) int8 containers in [-2, 1]
  LqerAScale = 5,   // one fp16
  LqerBCodes = 6,   // (rank, cols) int8 containers in [-8, 7]
  LqerBScales = 7,  // ceil(rank·cols / group) × fp16
};
std::string_view part_kind_name(PartKind k);

inline constexpr uint8_t kFlagPackedCodes = 1;
inline constexpr uint8_t kFlagLqer = 2;
inline constexpr uint8_t kFlagTransposedCodes = 4;  // int8-container codes stored column-major (cols, rows)
inline constexpr uint8_t kKnownFlags = kFlagPackedCodes | kFlagLqer | kFlagTransposedCodes;

struct PartPlacement {
  PartKind kind = PartKind::Values;
  uint32_t section = 0;
  uint64_t offset = 0;  // within the section's raw (decompressed, unshuffled) bytes
  uint64_t nbytes = 0;
};

struct TensorEntry {
  std::string name;
  std::vector<int64_t> shape;
  StorageKind kind = StorageKind::F32;
  uint8_t bits = 0;  // IntRow only
  uint8_t flags = 0;
  uint8_t group = 0;
  uint16_t lqer_rank = 0, lqer_group = 0;  // when kFlagLqer
  std::vector<PartPlacement> parts;
};

struct EncodedPart {
  PartKind kind;
  std::vector<uint8_t> bytes;
};

// The table entry (without placements) and the parts of a validated tensor, in a fixed order.
TensorEntry entry_for(const StoredTensor& t);
std::vector<EncodedPart> encode_tensor(const StoredTensor& t);
// The Codes part stored column-major instead (what kFlagTransposedCodes means); unpacked codes only.
bool can_transpose_codes(const StoredTensor& t);
std::vector<uint8_t> transposed_codes(const StoredTensor& t);
// Rebuilds the tensor from its entry and part bytes (parallel to entry.parts); validates everything.
StoredTensor decode_tensor(const TensorEntry& e, const std::vector<std::span<const uint8_t>>& part_bytes);

void write_entry(ByteWriter& w, const TensorEntry& e);
// Throws on unknown storage kinds, flags or part kinds, naming the tensor and the supported values.
TensorEntry read_entry(ByteReader& r, const std::string& source);

}  // namespace pgolf::artifact
