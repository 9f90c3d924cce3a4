#pragma once
// The in-memory model of a pgolf artifact (the byte layout is in docs/ARTIFACT.md): a model config
// (JSON text) plus named tensors, each in one storage kind. Everything needed to rebuild the model
// lives here; writer.h turns it into a file, reader.h back.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quant/lqer.h"
#include "quant/quantize.h"

namespace pgolf::artifact {

inline constexpr char kMagic[8] = {'P', 'G', 'O', 'L', 'F', 'A', 'R', 'T'};
// Version 2 = version 1 plus section compressor 5 (cm). The writer stamps the oldest version that
// describes the file (1 unless a section uses cm), so files without cm stay readable by older builds.
inline constexpr uint32_t kFormatVersion = 2;     // newest version this build writes and reads
inline constexpr uint32_t kMinReadVersion = 1;    // oldest version this build reads

// Values are stored in the file: never renumber.
enum class StorageKind : uint8_t {
  F32 = 1,     // raw little-endian f32
  F16 = 2,     // IEEE half bits (fp16 passthrough of small tensors)
  BF16 = 3,    // bfloat16 bits
  IntRow = 4,  // int-N per row (N in 2..8) with one fp16 scale per row; also the int7/int8 embedding
  Bytes = 5,   // opaque bytes (e.g. a tokenizer piece table), shape {n}
};
inline constexpr uint8_t kMaxStorageKind = 5;
std::string_view storage_kind_name(StorageKind k);

struct StoredTensor {
  std::string name;
  std::vector<int64_t> shape;
  StorageKind kind = StorageKind::F32;
  // Placement group chosen by the caller (e.g. the quant role). With per-group code sections the
  // codes of each group are compressed separately; otherwise only informational.
  uint8_t group = 0;
  std::vector<float> f32;       // F32
  std::vector<uint16_t> half;   // F16 / BF16 bits
  quant::QuantizedMatrix q;     // IntRow: rows = shape[0], cols = numel / rows
  std::optional<quant::LowRankCorrection> lqer;  // IntRow only
  std::vector<uint8_t> bytes;   // Bytes
  bool pack_bits = false;       // IntRow: bit-pack the codes instead of one int8 container each

  int64_t numel() const;
  // Throws naming the tensor when payload, shape and kind disagree.
  void validate() const;

  static StoredTensor make_f32(std::string name, std::vector<int64_t> shape, std::vector<float> values);
  static StoredTensor make_f16(std::string name, std::vector<int64_t> shape, const std::vector<float>& values);
  static StoredTensor make_bf16(std::string name, std::vector<int64_t> shape, const std::vector<float>& values);
  static StoredTensor make_int_row(std::string name, std::vector<int64_t> shape, quant::QuantizedMatrix q);
  static StoredTensor make_bytes(std::string name, std::vector<uint8_t> bytes);
};

struct Artifact {
  std::string config_json;  // the model config; readers parse it with nlohmann::json
  std::vector<StoredTensor> tensors;

  const StoredTensor* find(std::string_view name) const;
  const StoredTensor& get(std::string_view name) const;  // throws naming the missing tensor
  void validate() const;                                 // every tensor + unique names
};

// The f32 values a tensor stands for: F32 as stored, F16/BF16 widened, IntRow codes·scale plus the
// LQER correction. Deterministic: the same artifact gives the same bits everywhere.
std::vector<float> dequantize(const StoredTensor& t);

}  // namespace pgolf::artifact
