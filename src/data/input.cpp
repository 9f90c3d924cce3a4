#include "data/input.h"

#include <glob.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pgolf::data {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view strip_compression(std::string_view name) {
  for (std::string_view ext : {".gz", ".dz", ".xz", ".zst"})
    if (ends_with(name, ext)) return name.substr(0, name.size() - ext.size());
  return name;
}

// ------------------------------------------------------------------ byte sources

class PlainSource : public ByteSource {
 public:
  explicit PlainSource(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
    PG_CHECK(f_, "cannot open {}: {}", path, std::strerror(errno));
  }
  ~PlainSource() override { std::fclose(f_); }
  size_t read(char* buf, size_t n) override {
    size_t got = std::fread(buf, 1, n, f_);
    PG_CHECK(got > 0 || !std::ferror(f_), "read of {} failed: {}", path_, std::strerror(errno));
    return got;
  }

 private:
  std::string path_;
  std::FILE* f_;
};

class GzipSource : public ByteSource {  // also reads dictzip (.dz) and concatenated members
 public:
  explicit GzipSource(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    PG_CHECK(f_, "cannot open {}: {}", path, std::strerror(errno));
    gzbuffer(f_, 1 << 18);
  }
  ~GzipSource() override { gzclose(f_); }
  size_t read(char* buf, size_t n) override {
    int got = gzread(f_, buf, static_cast<unsigned>(std::min<size_t>(n, 1u << 30)));
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f_, &err);
      PG_FAIL("corrupt gzip data in {}: {}", path_, msg);
    }
    return static_cast<size_t>(got);
  }

 private:
  std::string path_;
  gzFile f_;
};

class XzSource : public ByteSource {
 public:
  explicit XzSource(const std::string& path) : path_(path), raw_(path), in_(1 << 16) {
    lzma_ret r = lzma_stream_decoder(&strm_, UINT64_MAX, LZMA_CONCATENATED);
    PG_CHECK(r == LZMA_OK, "cannot start the xz decoder for {} (code {})", path, static_cast<int>(r));
  }
  ~XzSource() override { lzma_end(&strm_); }
  size_t read(char* buf, size_t n) override {
    if (done_) return 0;
    strm_.next_out = reinterpret_cast<uint8_t*>(buf);
    strm_.avail_out = n;
    while (strm_.avail_out == n) {
      lzma_action action = LZMA_RUN;
      if (strm_.avail_in == 0) {
        size_t got = raw_.read(in_.data(), in_.size());
        strm_.next_in = reinterpret_cast<const uint8_t*>(in_.data());
        strm_.avail_in = got;
        if (got == 0) action = LZMA_FINISH;
      }
      lzma_ret r = lzma_code(&strm_, action);
      if (r == LZMA_STREAM_END) {
        done_ = true;
        break;
      }
      PG_CHECK(r == LZMA_OK, "corrupt or truncated xz data in {} (lzma code {})", path_, static_cast<int>(r));
    }
    return n - strm_.avail_out;
  }

 private:
  std::string path_;
  PlainSource raw_;
  std::vector<char> in_;
  lzma_stream strm_ = LZMA_STREAM_INIT;
  bool done_ = false;
};

class ZstdSource : public ByteSource {
 public:
  explicit ZstdSource(const std::string& path) : path_(path), raw_(path), in_(ZSTD_DStreamInSize()) {
    ctx_ = ZSTD_createDCtx();
    PG_CHECK(ctx_, "cannot create the zstd decoder for {}", path);
  }
  ~ZstdSource() override { ZSTD_freeDCtx(ctx_); }
  size_t read(char* buf, size_t n) override {
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (input_.pos == input_.size) {
        size_t got = raw_.read(in_.data(), in_.size());
        if (got == 0) {
          PG_CHECK(last_ret_ == 0, "truncated zstd data in {}", path_);
          return 0;
        }
        input_ = ZSTD_inBuffer{in_.data(), got, 0};
      }
      last_ret_ = ZSTD_decompressStream(ctx_, &out, &input_);
      PG_CHECK(!ZSTD_isError(last_ret_), "corrupt zstd data in {}: {}", path_, ZSTD_getErrorName(last_ret_));
    }
    return out.pos;
  }

 private:
  std::string path_;
  PlainSource raw_;
  std::vector<char> in_;
  ZSTD_DCtx* ctx_ = nullptr;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  size_t last_ret_ = 0;
};

}  // namespace

std::unique_ptr<ByteSource> open_input(const std::string& path) {
  if (ends_with(path, ".gz") || ends_with(path, ".dz")) return std::make_unique<GzipSource>(path);
  if (ends_with(path, ".xz")) return std::make_unique<XzSource>(path);
  if (ends_with(path, ".zst")) return std::make_unique<ZstdSource>(path);
  return std::make_unique<PlainSource>(path);
}

InputFormat detect_format(const std::string& path) {
  std::string_view base = strip_compression(path);
  if (ends_with(base, ".jsonl") || ends_with(base, ".json")) return InputFormat::Jsonl;
  if (ends_with(base, ".txt") || ends_with(base, ".text")) return InputFormat::Text;
  return InputFormat::Auto;
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns, InputFormat forced) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& pat : patterns) {
    std::vector<std::string> found;
    std::error_code ec;
    if (fs::is_directory(pat, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(pat))
        if (e.is_regular_file() && detect_format(e.path().string()) != InputFormat::Auto)
          found.push_back(e.path().string());
    } else if (fs::exists(pat, ec)) {
      PG_CHECK(forced != InputFormat::Auto || detect_format(pat) != InputFormat::Auto,
               "input {}: unknown format (expected .jsonl/.json/.txt, optionally .gz/.xz/.zst; or pass --format)", pat);
      found.push_back(pat);
    } else {
      glob_t g{};
      if (::glob(pat.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i)
          if (forced != InputFormat::Auto || detect_format(g.gl_pathv[i]) != InputFormat::Auto)
            found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
    }
    PG_CHECK(!found.empty(), "input {} matches no readable file", pat);
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

// ------------------------------------------------------------------ record reader

RecordReader::RecordReader(std::vector<std::string> files, ReaderOptions opt)
    : files_(std::move(files)), opt_(std::move(opt)) {}
RecordReader::~RecordReader() = default;

bool RecordReader::open_next_file() {
  if (file_index_ >= files_.size()) return false;
  const std::string& path = files_[file_index_];
  cur_format_ = opt_.format != InputFormat::Auto ? opt_.format : detect_format(path);
  PG_CHECK(cur_format_ != InputFormat::Auto, "input {}: unknown format", path);
  src_ = open_input(path);
  buf_.clear();
  buf_pos_ = 0;
  eof_ = false;
  line_no_ = 0;
  open_ = true;
  return true;
}

bool RecordReader::next_line(std::string& line) {
  line.clear();
  for (;;) {
    size_t nl = buf_.find('\n', buf_pos_);
    if (nl != std::string::npos) {
      line.append(buf_, buf_pos_, nl - buf_pos_);
      buf_pos_ = nl + 1;
      ++line_no_;
      return true;
    }
    line.append(buf_, buf_pos_, std::string::npos);
    buf_.clear();
    buf_pos_ = 0;
    if (eof_) {
      if (line.empty()) return false;
      ++line_no_;  // last line without a trailing newline
      return true;
    }
    buf_.resize(1 << 20);
    size_t got = src_->read(buf_.data(), buf_.size());
    buf_.resize(got);
    bytes_read_ += static_cast<int64_t>(got);
    if (got == 0) eof_ = true;
  }
}

namespace {
bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}
}  // namespace

bool RecordReader::next(RawRecord& out) {
  std::string line;
  for (;;) {
    if (!open_ && !open_next_file()) return false;
    out.source = static_cast<uint32_t>(file_index_);
    out.data.clear();
    if (cur_format_ == InputFormat::Jsonl) {
      out.is_json = true;
      while (next_line(line)) {
        if (is_blank(line)) continue;  // tolerate blank lines between records
        out.data = std::move(line);
        out.line = line_no_;
        return true;
      }
    } else if (opt_.text_split == TextSplit::File) {
      out.is_json = false;
      out.line = 1;
      bool any = false;
      while (next_line(line)) {
        if (any) out.data += '\n';
        out.data += line;
        any = true;
      }
      open_ = false;
      ++file_index_;
      if (any) return true;
      continue;
    } else {
      // Paragraphs: runs of non-blank lines; with txt_chunk_bytes, consecutive paragraphs (joined by a blank
      // line) until the document reaches that size.
      out.is_json = false;
      out.line = 0;
      bool in_par = false;
      while (next_line(line)) {
        if (is_blank(line)) {
          if (in_par && static_cast<int64_t>(out.data.size()) >= opt_.txt_chunk_bytes) return true;
          in_par = false;
          continue;
        }
        if (out.line == 0) out.line = line_no_;
        if (!out.data.empty()) out.data += in_par ? "\n" : "\n\n";
        out.data += line;
        in_par = true;
      }
      if (!out.data.empty()) {
        open_ = false;
        ++file_index_;
        return true;
      }
    }
    open_ = false;
    ++file_index_;
  }
}

// ------------------------------------------------------------------ extraction

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else goto bad;
    if (i + len > n) goto bad;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) goto bad;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Reject overlong forms, surrogates and code points above U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      goto bad;
    i += len;
  }
  return true;
bad:
  if (bad_offset) *bad_offset = i;
  return false;
}

const char* doc_status_name(DocStatus s) {
  switch (s) {
    case DocStatus::Ok: return "ok";
    case DocStatus::BadJson: return "invalid_json";
    case DocStatus::MissingField: return "missing_field";
    case DocStatus::BadUtf8: return "invalid_utf8";
    case DocStatus::Empty: return "empty";
  }
  return "?";
}

ExtractedDoc extract_document(RawRecord&& rec, const std::string& source_name, const std::string& field) {
  ExtractedDoc d;
  auto fail = [&](DocStatus s, const std::string& what) {
    d.status = s;
    d.text.clear();
    d.error = fmt::format("{}:{}: {}", source_name, rec.line, what);
    return d;
  };
  if (rec.is_json) {
    nlohmann::json j = nlohmann::json::parse(rec.data, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      size_t bad = 0;
      if (!is_valid_utf8(rec.data, &bad))
        return fail(DocStatus::BadUtf8, fmt::format("invalid UTF-8 at byte {} of the line", bad));
      return fail(DocStatus::BadJson, "invalid JSON");
    }
    if (!j.is_object()) return fail(DocStatus::BadJson, "JSON line is not an object");
    auto it = j.find(field);
    if (it == j.end() || !it->is_string())
      return fail(DocStatus::MissingField, fmt::format("no string field \"{}\"", field));
    d.text = std::move(it->get_ref<std::string&>());
  } else {
    d.text = std::move(rec.data);
  }
  size_t bad = 0;
  if (!is_valid_utf8(d.text, &bad)) return fail(DocStatus::BadUtf8, fmt::format("invalid UTF-8 at byte {} of the document", bad));
  if (d.text.empty()) return fail(DocStatus::Empty, "empty document");
  return d;
}

}  // namespace pgolf::data
