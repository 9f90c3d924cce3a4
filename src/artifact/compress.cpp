#include "artifact/compress.h"

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <lzma.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>

#include "core/error.h"

namespace pgolf::artifact {

namespace {

constexpr int kBrotliWindowBits = 24;  // the largest standard window; decoders need no extra flag

// LZMA2 raw stream (no .xz container: our section table already has sizes and checksums). The
// dictionary is sized to the data so small sections do not allocate the preset's 64 MiB.
lzma_options_lzma lzma_options(size_t raw_size) {
  lzma_options_lzma opt;
  PG_CHECK(!lzma_lzma_preset(&opt, 9 | LZMA_PRESET_EXTREME), "lzma: preset 9e unsupported by this liblzma");
  uint32_t dict = 4096;
  while (dict < raw_size && dict < opt.dict_size) dict <<= 1;
  opt.dict_size = std::min(dict, opt.dict_size);
  return opt;
}

}  // namespace

std::string_view compressor_name(Compressor c) {
  switch (c) {
    case Compressor::None: return "none";
    case Compressor::Zlib9: return "zlib-9";
    case Compressor::Brotli11: return "brotli-11";
    case Compressor::Lzma9Extreme: return "lzma-9e";
    case Compressor::Zstd22: return "zstd-22";
    case Compressor::Cm: return "cm";
  }
  return "?";
}

uint32_t min_format_version(Compressor c) { return c == Compressor::Cm ? 2 : 1; }

bool parse_compressor(std::string_view name, Compressor* out) {
  for (Compressor c : all_compressors())
    if (compressor_name(c) == name) {
      *out = c;
      return true;
    }
  return false;
}

std::vector<Compressor> all_compressors() {
  return {Compressor::None, Compressor::Zlib9, Compressor::Brotli11, Compressor::Lzma9Extreme, Compressor::Zstd22,
          Compressor::Cm};
}

std::vector<uint8_t> compress(Compressor c, std::span<const uint8_t> raw) { return compress(c, raw, {}); }

std::vector<uint8_t> compress(Compressor c, std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices) {
  std::vector<uint8_t> out;
  switch (c) {
    case Compressor::None: out.assign(raw.begin(), raw.end()); break;
    case Compressor::Zlib9: {
      uLongf n = compressBound(static_cast<uLong>(raw.size()));
      out.resize(n);
      const int rc = compress2(out.data(), &n, raw.data(), static_cast<uLong>(raw.size()), 9);
      PG_CHECK(rc == Z_OK, "zlib-9: compress2 failed ({}) on {} bytes", rc, raw.size());
      out.resize(n);
      break;
    }
    case Compressor::Brotli11: {
      size_t n = BrotliEncoderMaxCompressedSize(raw.size());
      if (n == 0) n = raw.size() + 1024;  // 0 means "too large to bound"; brotli then fails cleanly below
      out.resize(n);
      const BROTLI_BOOL ok = BrotliEncoderCompress(BROTLI_MAX_QUALITY, kBrotliWindowBits, BROTLI_MODE_GENERIC,
                                                   raw.size(), raw.data(), &n, out.data());
      PG_CHECK(ok == BROTLI_TRUE, "brotli-11: compression of {} bytes failed", raw.size());
      out.resize(n);
      break;
    }
    case Compressor::Lzma9Extreme: {
      lzma_options_lzma opt = lzma_options(raw.size());
      lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
      out.resize(lzma_stream_buffer_bound(raw.size()));
      size_t pos = 0;
      const lzma_ret rc = lzma_raw_buffer_encode(filters, nullptr, raw.data(), raw.size(), out.data(), &pos, out.size());
      PG_CHECK(rc == LZMA_OK, "lzma-9e: compression of {} bytes failed (lzma_ret {})", raw.size(), static_cast<int>(rc));
      out.resize(pos);
      break;
    }
    case Compressor::Zstd22: {
      out.resize(ZSTD_compressBound(raw.size()));
      const size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), 22);
      PG_CHECK(!ZSTD_isError(n), "zstd-22: compression of {} bytes failed: {}", raw.size(), ZSTD_getErrorName(n));
      out.resize(n);
      break;
    }
    case Compressor::Cm: out = cm_compress_best(raw, matrices); break;
    default: PG_FAIL("compress: unknown compressor id {}", static_cast<int>(c));
  }
  return out;
}

std::vector<uint8_t> decompress(Compressor c, std::span<const uint8_t> packed, size_t raw_size, const std::string& what) {
  std::vector<uint8_t> out(raw_size);
  const std::string_view name = compressor_name(c);
  switch (c) {
    case Compressor::None:
      PG_CHECK(packed.size() == raw_size, "{}: stored size {} != raw size {}", what, packed.size(), raw_size);
      std::copy(packed.begin(), packed.end(), out.begin());
      break;
    case Compressor::Zlib9: {
      uLongf n = static_cast<uLongf>(raw_size);
      const int rc = uncompress(out.data(), &n, packed.data(), static_cast<uLong>(packed.size()));
      PG_CHECK(rc == Z_OK && n == raw_size, "{}: {} data is corrupt (zlib rc {}, {} of {} bytes)", what, name, rc, n,
               raw_size);
      break;
    }
    case Compressor::Brotli11: {
      size_t n = raw_size;
      const BrotliDecoderResult rc = BrotliDecoderDecompress(packed.size(), packed.data(), &n, out.data());
      PG_CHECK(rc == BROTLI_DECODER_RESULT_SUCCESS && n == raw_size, "{}: {} data is corrupt ({} of {} bytes decoded)",
               what, name, n, raw_size);
      break;
    }
    case Compressor::Lzma9Extreme: {
      lzma_options_lzma opt = lzma_options(raw_size);
      lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
      size_t in_pos = 0, out_pos = 0;
      out.resize(raw_size + 1);  // one spare byte: liblzma refuses a zero-size output, and overlong data shows
      const lzma_ret rc = lzma_raw_buffer_decode(filters, nullptr, packed.data(), &in_pos, packed.size(), out.data(),
                                                 &out_pos, out.size());
      out.resize(raw_size);
      PG_CHECK(rc == LZMA_OK && out_pos == raw_size && in_pos == packed.size(),
               "{}: {} data is corrupt (lzma_ret {}, {} of {} bytes decoded)", what, name, static_cast<int>(rc), out_pos,
               raw_size);
      break;
    }
    case Compressor::Zstd22: {
      const size_t n = ZSTD_decompress(out.data(), out.size(), packed.data(), packed.size());
      PG_CHECK(!ZSTD_isError(n) && n == raw_size, "{}: {} data is corrupt ({})", what, name,
               ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong decoded size");
      break;
    }
    case Compressor::Cm: out = cm_decompress(packed, raw_size, what); break;
    default: PG_FAIL("{}: unknown compressor id {}", what, static_cast<int>(c));
  }
  return out;
}

std::vector<uint8_t> shuffle_bytes(std::span<const uint8_t> raw, int stride) {
  PG_CHECK(stride >= 1 && stride <= 16, "shuffle_bytes: stride {} not in [1, 16]", stride);
  std::vector<uint8_t> out;
  out.reserve(raw.size());
  for (int k = 0; k < stride; ++k)
    for (size_t i = static_cast<size_t>(k); i < raw.size(); i += static_cast<size_t>(stride)) out.push_back(raw[i]);
  return out;
}

std::vector<uint8_t> unshuffle_bytes(std::span<const uint8_t> planes, int stride) {
  PG_CHECK(stride >= 1 && stride <= 16, "unshuffle_bytes: stride {} not in [1, 16]", stride);
  std::vector<uint8_t> out(planes.size());
  size_t p = 0;
  for (int k = 0; k < stride; ++k)
    for (size_t i = static_cast<size_t>(k); i < out.size(); i += static_cast<size_t>(stride)) out[i] = planes[p++];
  return out;
}

uint64_t xxh64(std::span<const uint8_t> data) { return XXH64(data.data(), data.size(), 0); }

}  // namespace pgolf::artifact
