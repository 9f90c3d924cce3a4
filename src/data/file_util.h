#pragma once
// Small file helpers for the data pipeline: atomic writes and SHA-256 checksums.
#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace pgolf::data {

// Writes to "<path>.tmp.<pid>" in the same folder; commit() flushes, fsyncs and renames onto path.
// If the object dies without commit() (error, exception), the temporary file is removed, so an
// interrupted run never leaves a half-written file under the final name.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Overwrites bytes at an absolute offset (used to patch a header after streaming the body).
  void pwrite_at(int64_t offset, const void* data, size_t n);
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

void write_file_atomic(const std::string& path, std::string_view contents);
std::string read_file(const std::string& path);

// Incremental SHA-256 (FIPS 180-4).
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> finish();
  std::string hex();  // finish() as lowercase hex

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::string& path);

}  // namespace pgolf::data
