#pragma once
// Size accounting (issue 6, TECHNIQUES.md §1.2): counted bytes = artifact bytes + code bytes, where
// code bytes = brotli-11 size of a deterministic tar of the sources the evaluator is built from:
// CMakeLists.txt plus every src/**/*.{h,cpp,cu,cuh,in} (docs/ARTIFACT.md lists the exact rule).
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::artifact {

inline constexpr uint64_t kCountedByteLimit = 16'000'000;

// Paths relative to `source_dir`, '/'-separated, sorted bytewise.
std::vector<std::string> counted_source_files(const std::string& source_dir);

// A ustar archive of those files: sorted, mode 0644, uid/gid 0, empty owner names, mtime 0.
std::vector<uint8_t> deterministic_tar(const std::string& source_dir, const std::vector<std::string>& files);

struct CodeBytes {
  uint64_t files = 0;
  uint64_t raw_bytes = 0;  // sum of file sizes
  uint64_t tar_bytes = 0;
  uint64_t code_bytes = 0;  // brotli-11 of the tar: the counted number
};
CodeBytes compute_code_bytes(const std::string& source_dir);

struct CountedBytes {
  uint64_t artifact_bytes = 0, code_bytes = 0;
  uint64_t total() const { return artifact_bytes + code_bytes; }
  bool within(uint64_t limit = kCountedByteLimit) const { return total() <= limit; }
};

}  // namespace pgolf::artifact
