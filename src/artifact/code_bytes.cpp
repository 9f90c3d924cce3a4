#include "artifact/code_bytes.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "artifact/compress.h"
#include "artifact/reader.h"
#include "core/error.h"

namespace pgolf::artifact {

namespace fs = std::filesystem;

namespace {

bool counted_extension(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".h" || e == ".cpp" || e == ".cu" || e == ".cuh" || e == ".in";
}

void octal_field(uint8_t* dst, size_t width, uint64_t v) {
  // width-1 octal digits, zero padded, then NUL (ustar numeric field)
  for (size_t i = width - 1; i-- > 0;) {
    dst[i] = static_cast<uint8_t>('0' + (v & 7));
    v >>= 3;
  }
  dst[width - 1] = 0;
  PG_CHECK(v == 0, "tar: value does not fit in a {}-byte octal field", width);
}

void tar_header(std::vector<uint8_t>& out, const std::string& path, uint64_t size) {
  uint8_t h[512] = {};
  // ustar splits long names into prefix (155) '/' name (100).
  std::string name = path, prefix;
  if (name.size() > 100) {
    const size_t cut = path.rfind('/', 155);
    PG_CHECK(cut != std::string::npos && path.size() - cut - 1 <= 100 && cut <= 155, "tar: path too long: {}", path);
    prefix = path.substr(0, cut);
    name = path.substr(cut + 1);
  }
  std::memcpy(h, name.data(), name.size());
  octal_field(h + 100, 8, 0644);
  octal_field(h + 108, 8, 0);
  octal_field(h + 116, 8, 0);
  octal_field(h + 124, 12, size);
  octal_field(h + 136, 12, 0);  // mtime
  std::memset(h + 148, ' ', 8);  // checksum is computed with its own field as spaces
  h[156] = '0';
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memcpy(h + 345, prefix.data(), prefix.size());
  uint32_t sum = 0;
  for (uint8_t b : h) sum += b;
  octal_field(h + 148, 7, sum);
  h[155] = ' ';
  out.insert(out.end(), h, h + 512);
}

}  // namespace

std::vector<std::string> counted_source_files(const std::string& source_dir) {
  const fs::path root(source_dir);
  PG_CHECK(fs::is_regular_file(root / "CMakeLists.txt") && fs::is_directory(root / "src"),
           "code bytes: '{}' is not a pgolf source tree (needs CMakeLists.txt and src/)", source_dir);
  std::vector<std::string> files{"CMakeLists.txt"};
  for (const auto& e : fs::recursive_directory_iterator(root / "src")) {
    if (!e.is_regular_file() || !counted_extension(e.path())) continue;
    files.push_back(e.path().lexically_relative(root).generic_string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> deterministic_tar(const std::string& source_dir, const std::vector<std::string>& files) {
  std::vector<uint8_t> out;
  for (const std::string& rel : files) {
    const std::vector<uint8_t> data = read_file_bytes((fs::path(source_dir) / rel).string());
    tar_header(out, rel, data.size());
    out.insert(out.end(), data.begin(), data.end());
    out.resize((out.size() + 511) / 512 * 512, 0);
  }
  out.resize(out.size() + 1024, 0);  // end-of-archive: two zero blocks
  return out;
}

CodeBytes compute_code_bytes(const std::string& source_dir) {
  const std::vector<std::string> files = counted_source_files(source_dir);
  CodeBytes cb;
  cb.files = files.size();
  for (const auto& f : files) cb.raw_bytes += fs::file_size(fs::path(source_dir) / f);
  const std::vector<uint8_t> tar = deterministic_tar(source_dir, files);
  cb.tar_bytes = tar.size();
  cb.code_bytes = compress(Compressor::Brotli11, tar).size();
  return cb;
}

}  // namespace pgolf::artifact
