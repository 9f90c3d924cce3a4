// The cm coder (artifact/entropy_coder.h, compressor id 5): exact round trips, clear errors on bad
// streams, the artifact format rules for it, and the size measurements quoted in docs/ARTIFACT.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "artifact/compress.h"
#include "artifact/entropy_coder.h"
#include "artifact/pack_preset.h"
#include "artifact/pack_tensor.h"
#include "artifact/reader.h"
#include "artifact/writer.h"
#include "core/error.h"
#include "model/gpt.h"
#include "quant/gptq.h"
#include "train/config.h"

using namespace pgolf;
using namespace pgolf::artifact;

namespace {

std::string source_dir() {
  const char* root = std::getenv("PGOLF_SOURCE_DIR");
  return root != nullptr ? root : PGOLF_SOURCE_DIR;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Trained-matrix stand-in with per-column (input-channel) magnitude variation: W = σ_r · c_j · z,
// c_j log-normal with `col_spread`, z Gaussian with a `tail` fraction scaled ×3 (heavier tails).
std::vector<float> structured(int64_t rows, int64_t cols, double col_spread, double tail, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.5, 1.5), u01(0.0, 1.0);
  std::vector<double> cs(static_cast<size_t>(cols));
  for (auto& c : cs) c = std::exp(col_spread * d(g));
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double sd = 0.02 * u(g);
    for (int64_t c = 0; c < cols; ++c) {
      double z = d(g);
      if (u01(g) < tail) z *= 3;
      w[static_cast<size_t>(r * cols + c)] = static_cast<float>(sd * cs[static_cast<size_t>(c)] * z);
    }
  }
  return w;
}

// SDClip int-N codes of a structured matrix (the rec preset's RTN fallback without Hessians).
std::vector<int8_t> codes_of(int64_t rows, int64_t cols, int bits, double k, double spread, uint32_t seed) {
  const auto w = structured(rows, cols, spread, 0.05, seed);
  return quant::quantize_rtn(w, rows, cols, bits, quant::ClipRule::sd(k)).codes;
}

std::vector<uint8_t> as_bytes(const std::vector<int8_t>& v) { return {v.begin(), v.end()}; }

std::string cm_error(std::span<const uint8_t> z, size_t raw_size) {
  try {
    cm_decompress(z, raw_size, "section 'codes' (#0)");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double order0_bytes(std::span<const uint8_t> codes) {
  std::vector<double> h(256, 0);
  for (uint8_t c : codes) h[c] += 1;
  double bits = 0;
  for (double k : h)
    if (k > 0) bits -= k * std::log2(k / static_cast<double>(codes.size()));
  return bits / 8;
}

}  // namespace

TEST(CmCoder, RoundTripsEdgeSizesAndEveryFeatureSet) {
  std::mt19937 g(3);
  // Bytes only (no layout), including the empty and one-byte inputs.
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{255}, size_t{4097}}) {
    std::vector<uint8_t> raw(n);
    for (auto& b : raw) b = static_cast<uint8_t>(g());
    const auto z = cm_compress(raw, {});
    EXPECT_EQ(cm_decompress(z, n, "t"), raw) << n;
  }
  // Matrices of odd shapes, 1x1, all-zero, the int8 extremes, with byte gaps between them.
  std::vector<uint8_t> raw;
  std::vector<CodeMatrix> mats;
  auto add_matrix = [&](uint64_t rows, uint64_t cols, int lo, int hi) {
    std::uniform_int_distribution<int> d(lo, hi);
    mats.push_back({raw.size(), rows, cols});
    for (uint64_t i = 0; i < rows * cols; ++i) raw.push_back(static_cast<uint8_t>(static_cast<int8_t>(d(g))));
  };
  add_matrix(1, 1, -3, 3);
  for (int i = 0; i < 5; ++i) raw.push_back(static_cast<uint8_t>(g()));  // gap: bytes
  add_matrix(7, 13, -31, 31);
  add_matrix(3, 5, 0, 0);  // max |code| 0: nothing coded
  add_matrix(4, 9, -128, 127);
  add_matrix(1, 33, -1, 1);
  mats.push_back({raw.size(), 0, 17});  // empty matrices are allowed and skipped
  const auto s = as_bytes(codes_of(37, 61, 6, 12.85, 0.4, 5));
  mats.push_back({raw.size(), 37, 61});
  raw.insert(raw.end(), s.begin(), s.end());
  raw.push_back(42);  // trailing byte segment
  for (uint32_t f = 0; f <= kCmAllFeatures; ++f) {
    const auto z = cm_compress(raw, mats, f);
    ASSERT_EQ(cm_decompress(z, raw.size(), "t"), raw) << "features " << f;
  }
  // The same bytes without a layout, and through the generic compressor API.
  EXPECT_EQ(cm_decompress(cm_compress(raw, {}), raw.size(), "t"), raw);
  EXPECT_EQ(decompress(Compressor::Cm, compress(Compressor::Cm, raw, mats), raw.size(), "t"), raw);
  // Deterministic output.
  EXPECT_EQ(cm_compress(raw, mats), cm_compress(raw, mats));
  // The compressor API keeps the smaller candidate feature set.
  EXPECT_EQ(compress(Compressor::Cm, raw, mats).size(),
            std::min(cm_compress(raw, mats, kCmCandidateFeatures[0]).size(),
                     cm_compress(raw, mats, kCmCandidateFeatures[1]).size()));
}

TEST(CmCoder, RejectsBadLayouts) {
  std::vector<uint8_t> raw(100, 1);
  const std::vector<CodeMatrix> outside{{90, 3, 4}};
  EXPECT_THROW(cm_compress(raw, outside), Error);
  const std::vector<CodeMatrix> overlap{{0, 4, 4}, {10, 2, 2}};
  EXPECT_THROW(cm_compress(raw, overlap), Error);
  const std::vector<CodeMatrix> huge{{0, uint64_t{1} << 40, uint64_t{1} << 40}};
  EXPECT_THROW(cm_compress(raw, huge), Error);
  EXPECT_THROW(cm_compress(raw, {}, kCmAllFeatures + 1), Error);
}

TEST(CmCoder, CorruptTruncatedAndWrongSizeStreamsFailClearly) {
  const auto raw = as_bytes(codes_of(64, 96, 6, 12.85, 0.4, 7));
  const std::vector<CodeMatrix> mats{{0, 64, 96}};
  const auto z = cm_compress(raw, mats);
  ASSERT_EQ(cm_decompress(z, raw.size(), "t"), raw);
  // Every single-byte corruption (header or payload) is an error naming the section, never a crash
  // or wrong output.
  for (size_t at = 0; at < z.size(); at += (at < 32 ? 1 : 97)) {
    for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      auto bad = z;
      bad[at] ^= flip;
      const std::string e = cm_error(bad, raw.size());
      EXPECT_NE(e.find("section 'codes' (#0)"), std::string::npos) << "byte " << at << ": '" << e << "'";
    }
  }
  for (size_t keep : {size_t{0}, size_t{1}, size_t{5}, z.size() / 2, z.size() - 1}) {
    const std::string e = cm_error(std::span<const uint8_t>(z).subspan(0, keep), raw.size());
    EXPECT_NE(e.find("section 'codes' (#0)"), std::string::npos) << keep << ": " << e;
  }
  EXPECT_NE(cm_error(std::span<const uint8_t>(z).subspan(0, z.size() - 1), raw.size()).find("truncated"),
            std::string::npos);
  auto longer = z;
  longer.push_back(0);
  EXPECT_NE(cm_error(longer, raw.size()).find("trailing"), std::string::npos);
  EXPECT_NE(cm_error(z, raw.size() + 1).find("cover"), std::string::npos);
  EXPECT_NE(cm_error(z, raw.size() - 1), "");
}

// Column statistics pay on codes whose input channels differ in magnitude; brotli-11 cannot use them.
TEST(CmCoder, BeatsBrotliOnStructuredCodes) {
  std::vector<uint8_t> raw;
  std::vector<CodeMatrix> mats;
  uint32_t seed = 11;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{512, 512}, {256, 512}, {1024, 512}}) {
    const auto c = as_bytes(codes_of(rows, cols, 6, 12.85, 0.4, seed++));
    mats.push_back({raw.size(), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)});
    raw.insert(raw.end(), c.begin(), c.end());
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto z = cm_compress(raw, mats);
  const double enc_s = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_EQ(cm_decompress(z, raw.size(), "t"), raw);
  const double dec_s = seconds_since(t1);
  const size_t brotli = compress(Compressor::Brotli11, raw).size();
  std::printf("structured codes %zu: cm %zu (enc %.2f s, dec %.2f s), brotli-11 %zu, order-0 %.0f; cm/brotli %.4f\n",
              raw.size(), z.size(), enc_s, dec_s, brotli, order0_bytes(raw),
              static_cast<double>(z.size()) / static_cast<double>(brotli));
  EXPECT_LT(static_cast<double>(z.size()), 0.98 * static_cast<double>(brotli));
  EXPECT_LT(static_cast<double>(z.size()), order0_bytes(raw));
}

// ---- The artifact format with cm sections.

namespace {

Artifact small_artifact() {
  Artifact a;
  a.config_json = "{}";
  uint32_t seed = 21;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{48, 64}, {96, 64}}) {
    const auto w = structured(rows, cols, 0.4, 0.05, seed++);
    a.tensors.push_back(StoredTensor::make_int_row(fmt::format("w{}", rows), {rows, cols},
                                                   quant::quantize_rtn(w, rows, cols, 6, quant::ClipRule::sd(12.85))));
  }
  a.tensors.push_back(StoredTensor::make_f16("gain", {64}, structured(1, 64, 0.0, 0.0, 3)));
  return a;
}

std::string parse_error(std::span<const uint8_t> file) {
  try {
    parse_artifact(file, "mem");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void rehash_header(std::vector<uint8_t>& f) {
  uint32_t hb = 0;
  for (int i = 0; i < 4; ++i) hb |= static_cast<uint32_t>(f[12 + static_cast<size_t>(i)]) << (8 * i);
  const uint64_t h = xxh64(std::span<const uint8_t>(f).subspan(0, hb - 8));
  for (int i = 0; i < 8; ++i) f[hb - 8 + static_cast<size_t>(i)] = static_cast<uint8_t>(h >> (8 * i));
}

}  // namespace

TEST(CmArtifact, WritesVersion2ReadsBackExactAndNamesCorruptSections) {
  const Artifact a = small_artifact();
  SolverOptions o;
  o.compressors = {Compressor::Cm};
  o.threads = 1;
  for (bool tr : {false, true}) {
    o.transposed_codes = {tr};
    WriteReport rep;
    const auto bytes = serialize_artifact(a, o, &rep);
    ArtifactFileInfo info;
    const Artifact b = parse_artifact(bytes, "mem", &info);
    EXPECT_EQ(info.version, 2u);
    for (size_t i = 0; i < a.tensors.size(); ++i) EXPECT_EQ(dequantize(b.tensors[i]), dequantize(a.tensors[i]));
    EXPECT_EQ(b.tensors[0].q.codes, a.tensors[0].q.codes);
  }
  o.transposed_codes = {false};
  WriteReport rep;
  const auto bytes = serialize_artifact(a, o, &rep);
  ArtifactFileInfo info;
  parse_artifact(bytes, "mem", &info);
  ASSERT_EQ(info.sections[0].name, "codes");
  ASSERT_EQ(info.sections[0].compressor, Compressor::Cm);
  // A payload byte changed and the stored checksum patched to match: the cm decoder itself refuses,
  // naming the section.
  {
    auto f = bytes;
    const SectionInfo& s = info.sections[0];
    f[s.file_offset + s.stored_bytes / 2] ^= 0x10;
    const uint64_t h = xxh64(std::span<const uint8_t>(f).subspan(s.file_offset, s.stored_bytes));
    // the section table entry's stored_hash: find it by value in the header and patch it
    const uint64_t old = s.stored_hash;
    bool patched = false;
    for (size_t i = 0; i + 8 <= info.header_bytes && !patched; ++i) {
      uint64_t v = 0;
      for (int k = 0; k < 8; ++k) v |= static_cast<uint64_t>(f[i + static_cast<size_t>(k)]) << (8 * k);
      if (v == old) {
        for (int k = 0; k < 8; ++k) f[i + static_cast<size_t>(k)] = static_cast<uint8_t>(h >> (8 * k));
        patched = true;
      }
    }
    ASSERT_TRUE(patched);
    rehash_header(f);
    const std::string e = parse_error(f);
    EXPECT_NE(e.find("section 'codes' (#0)"), std::string::npos) << e;
    EXPECT_NE(e.find("cm"), std::string::npos) << e;
  }
  // Without the checksum patch the stored checksum catches it first, also naming the section.
  {
    auto f = bytes;
    f[info.sections[0].file_offset + 3] ^= 0x01;
    EXPECT_NE(parse_error(f).find("section 'codes' (#0) checksum mismatch"), std::string::npos);
  }
  // A version-1 file may not use cm: a writer bug or a forged version is refused by name.
  {
    auto f = bytes;
    f[8] = 1;
    rehash_header(f);
    const std::string e = parse_error(f);
    EXPECT_NE(e.find("needs artifact format version 2"), std::string::npos) << e;
  }
  // An unknown compressor id (a newer build's) is refused naming the known ones.
  {
    auto f = bytes;
    // the compressor byte follows the section name "codes" in the section table
    const std::string needle = "codes";
    auto it = std::search(f.begin(), f.begin() + static_cast<long>(info.header_bytes), needle.begin(), needle.end());
    ASSERT_NE(it, f.begin() + static_cast<long>(info.header_bytes));
    it[static_cast<long>(needle.size())] = 9;
    rehash_header(f);
    const std::string e = parse_error(f);
    EXPECT_NE(e.find("compressor id 9"), std::string::npos) << e;
    EXPECT_NE(e.find("5=cm"), std::string::npos) << e;
  }
}

TEST(CmArtifact, SolverChoosesCmWhenSmaller) {
  const Artifact a = small_artifact();
  SolverOptions o;
  o.compressors = {Compressor::Brotli11, Compressor::Cm};
  o.threads = 2;
  WriteReport rep;
  const auto bytes = serialize_artifact(a, o, &rep);
  EXPECT_EQ(rep.sections[0].compressor, Compressor::Cm);
  const Artifact b = parse_artifact(bytes, "mem");
  EXPECT_EQ(b.tensors[1].q.codes, a.tensors[1].q.codes);
  EXPECT_EQ(serialize_artifact(a, pin_choices(o, rep)), bytes);
}

// ---- Measurements (docs/ARTIFACT.md, "The cm coder"). PGOLF_SLOW_TESTS=1: the full rec-2026-04-09
// parameter set, Gaussian and structured; several minutes (brotli-11 of 36 MB).

namespace {

struct Measured {
  uint64_t plain_brotli = 0, cm = 0, cm_codes = 0, codes_raw = 0;
  double entropy = 0, enc_s = 0, dec_s = 0;
};

// Model bytes: brotli-11 of every part in table order (plain_brotli_bytes; skipped with
// PGOLF_CM_SKIP_BROTLI=1, it takes minutes on 36 MB) against the solver limited to cm (row- or
// column-major codes; aux also cm, stride 1 or 2), and the order-0 entropy of the codes plus 2 bytes
// per scale / fp16 value.
Measured measure(const Artifact& a) {
  Measured m;
  for (const StoredTensor& t : a.tensors) {
    if (t.kind != StorageKind::IntRow) {
      m.entropy += static_cast<double>(t.numel()) * 2;
      continue;
    }
    m.entropy += order0_bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.q.codes.data()), t.q.codes.size())) +
                 static_cast<double>(t.q.scales.size()) * 2;
  }
  const char* skip = std::getenv("PGOLF_CM_SKIP_BROTLI");
  if (skip == nullptr || std::string(skip) != "1") m.plain_brotli = plain_brotli_bytes(a);
  SolverOptions o;
  o.orders = {LayoutOrder::Given};
  o.shuffle_strides = {1, 2};
  o.threads = 2;
  o.compressors = {Compressor::Cm};
  WriteReport rep;
  auto t0 = std::chrono::steady_clock::now();
  const auto bytes = serialize_artifact(a, o, &rep);
  m.enc_s = seconds_since(t0);
  m.cm = bytes.size();
  for (const auto& s : rep.sections) {
    std::printf("  cm solver: section %s: %s%s, stride %d, %llu -> %llu\n", s.name.c_str(),
                std::string(compressor_name(s.compressor)).c_str(), s.transposed_codes ? " (column-major)" : "",
                s.shuffle_stride, static_cast<unsigned long long>(s.raw_bytes),
                static_cast<unsigned long long>(s.stored_bytes));
    if (s.name == "codes") {
      m.cm_codes = s.stored_bytes;
      m.codes_raw = s.raw_bytes;
    }
  }
  t0 = std::chrono::steady_clock::now();
  const Artifact b = parse_artifact(bytes, "mem");
  m.dec_s = seconds_since(t0);
  EXPECT_EQ(b.tensors.size(), a.tensors.size());
  return m;
}

void print(const char* what, const Measured& m) {
  if (m.plain_brotli == 0) std::printf("(plain brotli-11 skipped: PGOLF_CM_SKIP_BROTLI=1)\n");
  std::printf("%s: order-0 %.0f | plain brotli-11 %llu | cm artifact %llu (codes %llu -> %llu, %.3f bits/code) "
              "= %.2f%% under plain brotli-11, %.2f%% under order-0; write %.1f s (4 cm trials on 2 threads), "
              "read %.1f s\n",
              what, m.entropy, static_cast<unsigned long long>(m.plain_brotli), static_cast<unsigned long long>(m.cm),
              static_cast<unsigned long long>(m.codes_raw), static_cast<unsigned long long>(m.cm_codes),
              m.codes_raw ? 8.0 * static_cast<double>(m.cm_codes) / static_cast<double>(m.codes_raw) : 0.0,
              m.plain_brotli ? 100.0 * (1.0 - static_cast<double>(m.cm) / static_cast<double>(m.plain_brotli)) : 0.0,
              100.0 * (1.0 - static_cast<double>(m.cm) / m.entropy), m.enc_s, m.dec_s);
  std::fflush(stdout);
}

bool slow_tests() {
  const char* slow = std::getenv("PGOLF_SLOW_TESTS");
  return slow != nullptr && std::string(slow) == "1";
}

// The rec-2026-04-09 table (as PackPreset.RecParameterSetFitsTheLimit), `col_spread` 0 = its
// Gaussian stand-ins.
Artifact rec_table(double col_spread, double tail) {
  const train::Config cfg = train::load_config_file(source_dir() + "/configs/rec-2026-04-09.toml");
  const model::ParamTable t = model::GPT::describe(cfg.model);
  const PackPreset preset = pack_preset("rec-2026-04-09");
  Artifact a;
  a.config_json = "{}";
  uint32_t seed = 1;
  for (const model::Param& p : t.all()) {
    const Shape& s = p.spec.shape;
    std::vector<int64_t> dims(s.d.begin(), s.d.begin() + s.nd);
    const int64_t rows = s[0], cols = p.spec.shape.numel() / rows;
    a.tensors.push_back(
        pack_tensor(p.spec.name, dims, structured(rows, cols, col_spread, tail, seed++), p.spec.quant, preset.policy));
  }
  return a;
}

}  // namespace

TEST(CmMeasure, RecParameterSet) {
  if (!slow_tests()) GTEST_SKIP() << "PGOLF_SLOW_TESTS=1 measures the 36 M-parameter set (minutes)";
  print("rec-2026-04-09, Gaussian stand-ins", measure(rec_table(0.0, 0.0)));
  print("rec-2026-04-09, structured stand-ins (column spread 0.4, 5% tails x3)", measure(rec_table(0.4, 0.05)));
}

// A real packed artifact from a GPU run, named by PGOLF_REAL_ARTIFACT (a measurement of minutes on 2 cores:
// opt-in, so a stray file never slows down or times out the default suite).
TEST(CmMeasure, RealArtifact) {
  std::vector<std::string> files;
  if (const char* p = std::getenv("PGOLF_REAL_ARTIFACT")) files.push_back(p);
  if (files.empty()) GTEST_SKIP() << "set PGOLF_REAL_ARTIFACT=FILE.pgolf to measure cm on a real artifact";
  for (const std::string& f : files) {
    ArtifactFileInfo info;
    const Artifact a = read_artifact_file(f, &info);
    std::printf("%s: %llu bytes on disk\n", f.c_str(), static_cast<unsigned long long>(info.file_bytes));
    print(f.c_str(), measure(a));
  }
}

// GPTQ's own column structure: iid Gaussian weights, GPTQ (SDClip k 12.85, act order) with the
// Hessian of correlated inputs whose channels differ in scale (as RowClipSearchLowersErrorAtTheSameSize).
// Error feedback moves compensation onto the columns quantized late, so columns differ even here.
TEST(CmMeasure, GptqCodesOfGaussianWeights) {
  const int64_t cols = 512, n = 2048;
  std::mt19937 g(23);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    const float common = d(g);
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(t * cols + c)] = (d(g) + 0.7f * common) * (0.2f + 3.f * static_cast<float>(c % 11) / 10.f);
  }
  quant::HessianAccumulator acc(cols);
  acc.add(x, n);
  const auto h = acc.hessian();
  quant::GptqOptions o;
  o.bits = 6;
  o.clip = quant::ClipRule::sd(12.85);
  std::vector<uint8_t> raw_rtn, raw_gptq;
  std::vector<CodeMatrix> mats;
  uint32_t seed = 31;
  for (int64_t rows : {512, 1024}) {
    const auto w = structured(rows, cols, 0.0, 0.0, seed++);
    const auto q = quant::gptq_quantize(w, rows, cols, h, o);
    const auto r = quant::quantize_rtn(w, rows, cols, 6, quant::ClipRule::sd(12.85));
    mats.push_back({raw_gptq.size(), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)});
    raw_gptq.insert(raw_gptq.end(), q.codes.begin(), q.codes.end());
    raw_rtn.insert(raw_rtn.end(), r.codes.begin(), r.codes.end());
  }
  for (const auto* raw : {&raw_rtn, &raw_gptq}) {
    const size_t cm = cm_compress(*raw, mats).size(), br = compress(Compressor::Brotli11, *raw).size();
    std::printf("%s codes of Gaussian weights (%zu): cm %zu, brotli-11 %zu, order-0 %.0f; cm/brotli %.4f\n",
                raw == &raw_rtn ? "RTN " : "GPTQ", raw->size(), cm, br, order0_bytes(*raw),
                static_cast<double>(cm) / static_cast<double>(br));
    EXPECT_LT(cm, br);
  }
}
