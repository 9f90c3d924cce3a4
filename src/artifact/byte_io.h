#pragma once
// Little-endian byte writer/reader for the artifact header. The reader never reads past its span:
// every read names what it was reading, so a truncated header gives a precise message.
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"

namespace pgolf::artifact {

class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void i64(int64_t v) { put(static_cast<uint64_t>(v), 8); }
  void bytes(std::span<const uint8_t> b) { buf_.insert(buf_.end(), b.begin(), b.end()); }
  void str(const std::string& s) { buf_.insert(buf_.end(), s.begin(), s.end()); }
  // Overwrite a u32/u64 written earlier (lengths known only later).
  void patch_u32(size_t at, uint32_t v) { for (int i = 0; i < 4; ++i) buf_[at + i] = static_cast<uint8_t>(v >> (8 * i)); }
  void patch_u64(size_t at, uint64_t v) { for (int i = 0; i < 8; ++i) buf_[at + i] = static_cast<uint8_t>(v >> (8 * i)); }
  size_t size() const { return buf_.size(); }
  std::vector<uint8_t>& buffer() { return buf_; }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> data, std::string source) : data_(data), source_(std::move(source)) {}
  uint8_t u8(const char* what) { return static_cast<uint8_t>(get(1, what)); }
  uint16_t u16(const char* what) { return static_cast<uint16_t>(get(2, what)); }
  uint32_t u32(const char* what) { return static_cast<uint32_t>(get(4, what)); }
  uint64_t u64(const char* what) { return get(8, what); }
  int64_t i64(const char* what) { return static_cast<int64_t>(get(8, what)); }
  std::span<const uint8_t> bytes(size_t n, const char* what) {
    need(n, what);
    auto s = data_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::string str(size_t n, const char* what) {
    auto b = bytes(n, what);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  void need(size_t n, const char* what) {
    PG_CHECK(n <= data_.size() - pos_, "{}: header is truncated while reading {} (needs {} bytes at offset {}, {} left)",
             source_, what, n, pos_, data_.size() - pos_);
  }
  uint64_t get(int n, const char* what) {
    need(static_cast<size_t>(n), what);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(data_[pos_ + static_cast<size_t>(i)]) << (8 * i);
    pos_ += static_cast<size_t>(n);
    return v;
  }
  std::span<const uint8_t> data_;
  std::string source_;
  size_t pos_ = 0;
};

}  // namespace pgolf::artifact
