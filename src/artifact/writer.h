#pragma once
// Artifact writer: lays tensor parts out into sections, picks per section the smallest of
// compressor × byte-shuffle × part order, and writes the file atomically (temp file + rename).
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "artifact/compress.h"
#include "artifact/format.h"

namespace pgolf::artifact {

// Values are stored in the file (informational only: offsets make any order readable).
enum class LayoutOrder : uint8_t { Given = 0, SizeDescending = 1 };
std::string_view layout_order_name(LayoutOrder o);

// One section's choice; pinning it skips the search (e.g. inside a pruning binary search).
struct SectionChoice {
  Compressor compressor = Compressor::Brotli11;
  int shuffle_stride = 1;
  LayoutOrder order = LayoutOrder::Given;
  bool transposed_codes = false;
};

struct SolverOptions {
  std::vector<Compressor> compressors{Compressor::Brotli11, Compressor::Lzma9Extreme, Compressor::Zstd22, Compressor::Cm};
  std::vector<int> shuffle_strides{1, 2};  // 1 = no shuffle; 2 suits fp16, 4 suits f32
  std::vector<LayoutOrder> orders{LayoutOrder::Given, LayoutOrder::SizeDescending};
  std::vector<bool> transposed_codes{false, true};  // codes sections: also try column-major codes
  bool codes_section_per_group = false;  // one codes section per StoredTensor::group
  std::map<std::string, SectionChoice> pinned;  // section name -> fixed choice
  int threads = 0;                       // trials run in parallel; 0 = hardware concurrency
};

struct SectionReport {
  std::string name;  // "aux", "codes" or "codes.g<N>"
  Compressor compressor = Compressor::None;
  int shuffle_stride = 1;
  LayoutOrder order = LayoutOrder::Given;
  bool transposed_codes = false;
  uint64_t raw_bytes = 0, stored_bytes = 0;
  int parts = 0, trials = 0;
  SectionChoice choice() const { return {compressor, shuffle_stride, order, transposed_codes}; }
};

struct WriteReport {
  std::vector<SectionReport> sections;
  uint64_t header_bytes = 0, file_bytes = 0;
};

// `base` with every section of `report` pinned to the choice the solver made there.
SolverOptions pin_choices(SolverOptions base, const WriteReport& report);

std::vector<uint8_t> serialize_artifact(const Artifact& a, const SolverOptions& opt, WriteReport* report = nullptr);
// Serializes then writes atomically: an existing file at `path` is replaced only by a complete one.
WriteReport write_artifact_file(const Artifact& a, const std::string& path, const SolverOptions& opt);
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

// Reference size for "how much did layout buy": brotli-11 of every part in table order, one stream.
uint64_t plain_brotli_bytes(const Artifact& a);

}  // namespace pgolf::artifact
