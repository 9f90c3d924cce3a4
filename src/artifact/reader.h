#pragma once
// Artifact reader: validates everything (magic, version, sizes, header and section checksums,
// storage kinds, part bounds, code ranges) and fails with a message naming the file, the section
// or tensor, and the numbers that disagree. Never trusts a length before bounds-checking it.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "artifact/compress.h"
#include "artifact/format.h"
#include "artifact/tensor_codec.h"
#include "artifact/writer.h"

namespace pgolf::artifact {

struct SectionInfo {
  std::string name;
  Compressor compressor = Compressor::None;
  int shuffle_stride = 1;
  LayoutOrder order = LayoutOrder::Given;
  uint64_t file_offset = 0, stored_bytes = 0, raw_bytes = 0;
  uint64_t stored_hash = 0, raw_hash = 0;  // xxh64 of the stored (compressed) and raw (unshuffled) bytes
};

// Everything `pgolf info` prints besides the tensors themselves.
struct ArtifactFileInfo {
  uint32_t version = 0;
  uint64_t header_bytes = 0, file_bytes = 0;
  std::vector<SectionInfo> sections;
  std::vector<TensorEntry> tensors;
};

Artifact parse_artifact(std::span<const uint8_t> file, const std::string& source, ArtifactFileInfo* info = nullptr);
Artifact read_artifact_file(const std::string& path, ArtifactFileInfo* info = nullptr);
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace pgolf::artifact
