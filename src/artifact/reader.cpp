#include "artifact/reader.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "artifact/byte_io.h"
#include "core/error.h"

namespace pgolf::artifact {

namespace {

constexpr size_t kPreambleBytes = 24;  // magic, version, header bytes, file bytes
constexpr uint64_t kMaxSectionRawBytes = uint64_t{1} << 32;  // refuse absurd sizes before allocating

uint64_t le64_at(std::span<const uint8_t> b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[at + static_cast<size_t>(i)]) << (8 * i);
  return v;
}

SectionInfo read_section(ByteReader& r, const std::string& source, size_t index) {
  SectionInfo s;
  const uint8_t name_len = r.u8("section name length");
  s.name = r.str(name_len, "section name");
  const uint8_t c = r.u8("section compressor");
  PG_CHECK(c <= kMaxCompressorId,
           "{}: section '{}' (#{}) uses compressor id {} which this build does not know (known: 0=none 1=zlib-9 "
           "2=brotli-11 3=lzma-9e 4=zstd-22 5=cm)",
           source, s.name, index, c);
  s.compressor = static_cast<Compressor>(c);
  s.shuffle_stride = r.u8("section shuffle stride");
  PG_CHECK(s.shuffle_stride >= 1 && s.shuffle_stride <= 16, "{}: section '{}' has shuffle stride {} (must be 1..16)",
           source, s.name, s.shuffle_stride);
  const uint8_t order = r.u8("section order");
  PG_CHECK(order <= 1, "{}: section '{}' has layout order {} (known: 0=given 1=size-desc)", source, s.name, order);
  s.order = static_cast<LayoutOrder>(order);
  PG_CHECK(r.u8("section reserved byte") == 0, "{}: section '{}' has a nonzero reserved byte", source, s.name);
  s.file_offset = r.u64("section offset");
  s.stored_bytes = r.u64("section stored size");
  s.raw_bytes = r.u64("section raw size");
  s.stored_hash = r.u64("section stored checksum");
  s.raw_hash = r.u64("section raw checksum");
  PG_CHECK(s.raw_bytes <= kMaxSectionRawBytes, "{}: section '{}' claims {} raw bytes (limit {})", source, s.name,
           s.raw_bytes, kMaxSectionRawBytes);
  return s;
}

}  // namespace

Artifact parse_artifact(std::span<const uint8_t> file, const std::string& source, ArtifactFileInfo* info) {
  PG_CHECK(file.size() >= 8, "'{}' is not a pgolf artifact: only {} bytes", source, file.size());
  PG_CHECK(std::memcmp(file.data(), kMagic, 8) == 0, "'{}' is not a pgolf artifact (bad magic bytes)", source);
  PG_CHECK(file.size() >= kPreambleBytes, "'{}' is truncated: {} bytes, shorter than the {}-byte preamble", source,
           file.size(), kPreambleBytes);
  ByteReader pre(file.subspan(0, kPreambleBytes), source);
  pre.bytes(8, "magic");
  ArtifactFileInfo fi;
  fi.version = pre.u32("format version");
  PG_CHECK(fi.version >= kMinReadVersion && fi.version <= kFormatVersion,
           "'{}' has artifact format version {}; this build reads versions {} to {} (a newer pgolf wrote it?)", source,
           fi.version, kMinReadVersion, kFormatVersion);
  fi.header_bytes = pre.u32("header size");
  fi.file_bytes = pre.u64("file size");
  PG_CHECK(file.size() >= fi.file_bytes, "'{}' is truncated: {} bytes on disk, the header says {}", source, file.size(),
           fi.file_bytes);
  PG_CHECK(file.size() == fi.file_bytes, "'{}' has {} unexpected trailing bytes after the {} the header declares",
           source, file.size() - fi.file_bytes, fi.file_bytes);
  PG_CHECK(fi.header_bytes >= kPreambleBytes + 8 && fi.header_bytes <= fi.file_bytes,
           "'{}': header size {} is impossible for a {}-byte file", source, fi.header_bytes, fi.file_bytes);
  const uint64_t stored_header_hash = le64_at(file, fi.header_bytes - 8);
  const uint64_t header_hash = xxh64(file.subspan(0, fi.header_bytes - 8));
  PG_CHECK(stored_header_hash == header_hash,
           "'{}': header checksum mismatch (stored xxh64 {:016x}, computed {:016x}); the file is corrupt", source,
           stored_header_hash, header_hash);

  ByteReader r(file.subspan(kPreambleBytes, fi.header_bytes - 8 - kPreambleBytes), source);
  Artifact a;
  const uint32_t config_len = r.u32("config length");
  a.config_json = r.str(config_len, "config");
  PG_CHECK(a.config_json.empty() || nlohmann::json::accept(a.config_json), "'{}': the model config is not valid JSON",
           source);
  const uint32_t nsections = r.u32("section count");
  uint64_t expect_offset = fi.header_bytes;
  for (uint32_t i = 0; i < nsections; ++i) {
    SectionInfo s = read_section(r, source, i);
    PG_CHECK(s.file_offset == expect_offset && s.stored_bytes <= fi.file_bytes - s.file_offset,
             "'{}': section '{}' (#{}) claims bytes [{}, {}) but the file has {} and the previous section ends at {}",
             source, s.name, i, s.file_offset, s.file_offset + s.stored_bytes, fi.file_bytes, expect_offset);
    expect_offset += s.stored_bytes;
    PG_CHECK(min_format_version(s.compressor) <= fi.version,
             "'{}': section '{}' (#{}) uses compressor {}, which needs artifact format version {} but the file says {}",
             source, s.name, i, compressor_name(s.compressor), min_format_version(s.compressor), fi.version);
    fi.sections.push_back(std::move(s));
  }
  PG_CHECK(expect_offset == fi.file_bytes, "'{}': sections end at byte {} but the file has {}", source, expect_offset,
           fi.file_bytes);
  const uint32_t ntensors = r.u32("tensor count");
  for (uint32_t i = 0; i < ntensors; ++i) fi.tensors.push_back(read_entry(r, source));
  PG_CHECK(r.remaining() == 0, "'{}': {} unexpected bytes at the end of the header", source, r.remaining());

  std::vector<std::vector<uint8_t>> raw;
  for (size_t i = 0; i < fi.sections.size(); ++i) {
    const SectionInfo& s = fi.sections[i];
    const auto stored = file.subspan(s.file_offset, s.stored_bytes);
    const uint64_t h = xxh64(stored);
    PG_CHECK(h == s.stored_hash,
             "'{}': section '{}' (#{}) checksum mismatch: stored xxh64 {:016x}, computed {:016x}; the file is corrupt",
             source, s.name, i, s.stored_hash, h);
    const std::string what = fmt::format("'{}': section '{}' (#{})", source, s.name, i);
    std::vector<uint8_t> planes = decompress(s.compressor, stored, s.raw_bytes, what);
    raw.push_back(s.shuffle_stride == 1 ? std::move(planes) : unshuffle_bytes(planes, s.shuffle_stride));
    const uint64_t hr = xxh64(raw.back());
    PG_CHECK(hr == s.raw_hash, "{}: raw checksum mismatch after {}: stored xxh64 {:016x}, computed {:016x}", what,
             compressor_name(s.compressor), s.raw_hash, hr);
  }
  for (const TensorEntry& e : fi.tensors) {
    std::vector<std::span<const uint8_t>> parts;
    for (const PartPlacement& p : e.parts) {
      PG_CHECK(p.section < raw.size(), "'{}': tensor '{}' part '{}' points at section {} of {}", source, e.name,
               part_kind_name(p.kind), p.section, raw.size());
      const auto& sec = raw[p.section];
      PG_CHECK(p.offset <= sec.size() && p.nbytes <= sec.size() - p.offset,
               "'{}': tensor '{}' part '{}' bytes [{}, {}) lie outside section '{}' ({} bytes)", source, e.name,
               part_kind_name(p.kind), p.offset, p.offset + p.nbytes, fi.sections[p.section].name, sec.size());
      parts.emplace_back(sec.data() + p.offset, p.nbytes);
    }
    a.tensors.push_back(decode_tensor(e, parts));
  }
  a.validate();
  if (info) *info = std::move(fi);
  return a;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  PG_CHECK(f != nullptr, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  PG_CHECK(!err, "error reading '{}'", path);
  return data;
}

Artifact read_artifact_file(const std::string& path, ArtifactFileInfo* info) {
  const std::vector<uint8_t> data = read_file_bytes(path);
  return parse_artifact(data, path, info);
}

}  // namespace pgolf::artifact
