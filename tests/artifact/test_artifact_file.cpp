#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "artifact/info.h"
#include "artifact/reader.h"
#include "artifact/writer.h"
#include "core/error.h"
#include "quant/lqer.h"

using namespace pgolf;
using namespace pgolf::artifact;

namespace {

std::vector<float> gaussian(size_t n, float sd, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// One tensor of every storage kind (and int5/6/7/8, packed and not, with and without LQER).
Artifact sample_artifact() {
  Artifact a;
  a.config_json = R"({"model":"gpt","n_layer":2,"d_model":16})";
  a.tensors.push_back(StoredTensor::make_f32("lambdas", {3}, {0.5f, -1.25f, 3e-8f}));
  a.tensors.push_back(StoredTensor::make_f16("attn_scale", {2, 5}, gaussian(10, 1.f, 1)));
  a.tensors.push_back(StoredTensor::make_bf16("skip", {4}, gaussian(4, 1.f, 2)));
  a.tensors.push_back(StoredTensor::make_bytes("tokenizer", {'p', 'i', 'e', 'c', 'e', 0, 1}));
  int seed = 10;
  for (int bits : {5, 6, 7, 8}) {
    for (bool packed : {false, true}) {
      const int64_t rows = 12, cols = 20;
      auto w = gaussian(static_cast<size_t>(rows * cols), 0.05f, static_cast<uint32_t>(seed++));
      auto q = quant::quantize_rtn(w, rows, cols, bits, quant::ClipRule::sd(3.0));
      StoredTensor t = StoredTensor::make_int_row(fmt::format("blocks.{}.w{}", bits, packed ? "p" : ""), {rows, 4, 5}, q);
      t.pack_bits = packed;
      t.group = static_cast<uint8_t>(bits);
      if (bits == 6) {
        auto deq = quant::dequantize(q);
        std::vector<float> err(w.size());
        for (size_t i = 0; i < w.size(); ++i) err[i] = w[i] - deq[i];
        t.lqer = quant::lqer_fit(err, rows, cols, 2, 16);
      }
      a.tensors.push_back(std::move(t));
    }
  }
  return a;
}

SolverOptions fast_solver() {
  SolverOptions o;
  o.compressors = {Compressor::Zlib9, Compressor::Zstd22};
  o.threads = 2;
  return o;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << what;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / fmt::format("pgolf_test_{}_{}", ::getpid(), name)).string();
}

std::string error_of(const std::vector<uint8_t>& file) {
  try {
    parse_artifact(file, "x.pgolf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ArtifactFile, SaveLoadDequantizeIsBitExactForEveryKind) {
  const Artifact a = sample_artifact();
  for (int variant = 0; variant < 3; ++variant) {
    const bool per_group = variant == 1;
    SolverOptions o = fast_solver();
    o.codes_section_per_group = per_group;
    if (variant == 2) o.transposed_codes = {true};  // force column-major codes
    WriteReport rep;
    const auto bytes = serialize_artifact(a, o, &rep);
    EXPECT_EQ(rep.file_bytes, bytes.size());
    EXPECT_EQ(rep.sections.size(), per_group ? 5u : 2u);  // codes (1 or 4 groups) + aux
    ArtifactFileInfo info;
    const Artifact b = parse_artifact(bytes, "mem", &info);
    EXPECT_EQ(info.version, 1u);  // no cm section: the oldest version that describes the file
    const std::string text = describe_artifact(info);
    EXPECT_NE(text.find("blocks.6.w"), std::string::npos);
    EXPECT_NE(text.find("lqer2"), std::string::npos);
    EXPECT_NE(text.find(std::string(compressor_name(info.sections[0].compressor))), std::string::npos);
    if (variant == 2) {
      for (const TensorEntry& e : info.tensors) {
        if (e.kind != StorageKind::IntRow) continue;
        EXPECT_EQ((e.flags & kFlagTransposedCodes) != 0, (e.flags & kFlagPackedCodes) == 0) << e.name;
      }
    }
    EXPECT_EQ(b.config_json, a.config_json);
    ASSERT_EQ(b.tensors.size(), a.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      const StoredTensor& x = a.tensors[i];
      const StoredTensor& y = b.tensors[i];
      EXPECT_EQ(y.name, x.name);
      EXPECT_EQ(y.shape, x.shape);
      EXPECT_EQ(y.kind, x.kind);
      EXPECT_EQ(y.group, x.group);
      if (x.kind == StorageKind::Bytes) {
        EXPECT_EQ(y.bytes, x.bytes);
        EXPECT_THROW(dequantize(y), Error);
        continue;
      }
      if (x.kind == StorageKind::IntRow) {
        EXPECT_EQ(y.q.codes, x.q.codes);
        EXPECT_EQ(y.q.scales, x.q.scales);
        EXPECT_EQ(y.pack_bits, x.pack_bits);
        EXPECT_EQ(y.lqer.has_value(), x.lqer.has_value());
      }
      expect_same_bits(dequantize(x), dequantize(y), x.name);
    }
  }
}

TEST(ArtifactFile, LqerReducesErrorAndSurvivesTheFile) {
  const Artifact a = sample_artifact();
  const StoredTensor& t = a.get("blocks.6.w");
  ASSERT_TRUE(t.lqer.has_value());
  StoredTensor plain = t;
  plain.lqer.reset();
  // The correction moves the dequantized matrix; the round trip keeps it exactly (tested above).
  EXPECT_NE(dequantize(plain), dequantize(t));
}

TEST(ArtifactFile, AtomicWriteNeverLeavesAPartialFile) {
  const std::string path = temp_path("atomic.pgolf");
  const Artifact a = sample_artifact();
  write_artifact_file(a, path, fast_solver());
  const auto good = read_file_bytes(path);
  // A failing write (invalid artifact) leaves the good file untouched and no temp files behind.
  Artifact bad = a;
  bad.tensors[0].f32.pop_back();
  EXPECT_THROW(write_artifact_file(bad, path, fast_solver()), Error);
  EXPECT_EQ(read_file_bytes(path), good);
  Artifact bad_config = a;
  bad_config.config_json = "{not json";
  EXPECT_THROW(write_artifact_file(bad_config, path, fast_solver()), Error);
  EXPECT_EQ(read_file_bytes(path), good);
  EXPECT_THROW(write_file_atomic("/nonexistent_dir_pgolf/x.pgolf", good), Error);
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(path + ".tmp"), std::string::npos);
  EXPECT_EQ(read_artifact_file(path).tensors.size(), a.tensors.size());
  std::filesystem::remove(path);
  EXPECT_THROW(read_artifact_file(path), Error);
}

TEST(ArtifactFile, TruncationAndCorruptionGiveClearErrors) {
  const auto good = serialize_artifact(sample_artifact(), fast_solver());
  // Truncated anywhere: an error, never a crash.
  for (size_t n : {size_t{0}, size_t{5}, size_t{20}, size_t{60}, good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_FALSE(error_of(t).empty()) << n;
  }
  std::vector<uint8_t> t(good.begin(), good.end() - 1);
  EXPECT_NE(error_of(t).find("truncated"), std::string::npos) << error_of(t);
  // Every single-byte flip is detected.
  for (size_t i = 0; i < good.size(); i += 7) {
    std::vector<uint8_t> c = good;
    c[i] ^= 0x40;
    EXPECT_FALSE(error_of(c).empty()) << "flip at " << i;
  }
  // A flip in the last section's payload names the section and both checksums.
  std::vector<uint8_t> c = good;
  c[c.size() - 3] ^= 1;
  const std::string e = error_of(c);
  EXPECT_NE(e.find("section 'aux'"), std::string::npos) << e;
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find("stored xxh64"), std::string::npos) << e;
  EXPECT_NE(e.find("computed"), std::string::npos) << e;
  std::vector<uint8_t> magic = good;
  magic[0] = 'X';
  EXPECT_NE(error_of(magic).find("not a pgolf artifact"), std::string::npos);
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  EXPECT_NE(error_of(trailing).find("trailing"), std::string::npos);
}

TEST(ArtifactFile, NewerVersionSaysWhichVersionsThisBuildReads) {
  auto f = serialize_artifact(sample_artifact(), fast_solver());
  f[8] = static_cast<uint8_t>(kFormatVersion + 1);
  const std::string e = error_of(f);
  EXPECT_NE(e.find(fmt::format("format version {}", kFormatVersion + 1)), std::string::npos) << e;
  EXPECT_NE(e.find(fmt::format("reads versions {} to {}", kMinReadVersion, kFormatVersion)), std::string::npos) << e;
}

TEST(ArtifactFile, UnknownStorageKindIsRejectedByName) {
  Artifact a;
  a.tensors.push_back(StoredTensor::make_f32("only", {2}, {1.f, 2.f}));
  auto f = serialize_artifact(a, fast_solver());
  // Find the tensor entry (name then kind byte), patch the kind, and re-seal the header checksum
  // so the reader gets as far as the table.
  const std::string name = "only";
  auto it = std::search(f.begin(), f.end(), name.begin(), name.end());
  ASSERT_NE(it, f.end());
  *(it + 4) = 42;
  uint32_t hb = 0;
  for (int i = 0; i < 4; ++i) hb |= static_cast<uint32_t>(f[12 + static_cast<size_t>(i)]) << (8 * i);
  const uint64_t h = xxh64(std::span<const uint8_t>(f).subspan(0, hb - 8));
  for (int i = 0; i < 8; ++i) f[hb - 8 + static_cast<size_t>(i)] = static_cast<uint8_t>(h >> (8 * i));
  const std::string e = error_of(f);
  EXPECT_NE(e.find("storage kind 42"), std::string::npos) << e;
  EXPECT_NE(e.find("'only'"), std::string::npos) << e;
}

TEST(ArtifactFile, SolverPicksTheSmallestCombination) {
  const Artifact a = sample_artifact();
  SolverOptions all;
  all.compressors = all_compressors();
  all.shuffle_strides = {1, 2, 4};
  all.threads = 2;
  WriteReport best;
  const auto chosen = serialize_artifact(a, all, &best);
  ASSERT_EQ(best.sections.size(), 2u);
  EXPECT_EQ(best.sections[0].name, "codes");
  // codes can also be transposed; cm runs on codes only unshuffled
  EXPECT_EQ(best.sections[0].trials, (6 * 3 - 2) * 2 * 2);
  EXPECT_EQ(best.sections[1].trials, 6 * 3 * 2);
  // No single fixed combination beats the solver's file.
  for (Compressor c : all.compressors)
    for (int st : all.shuffle_strides)
      for (LayoutOrder o : all.orders)
        for (bool tr : {false, true}) {
          SolverOptions one;
          one.compressors = {c};
          one.shuffle_strides = {st};
          one.orders = {o};
          one.transposed_codes = {tr};
          one.threads = 1;
          WriteReport r;
          const auto bytes = serialize_artifact(a, one, &r);
          EXPECT_LE(chosen.size(), bytes.size()) << compressor_name(c) << " stride " << st;
          for (size_t i = 0; i < r.sections.size(); ++i)
            EXPECT_LE(best.sections[i].stored_bytes, r.sections[i].stored_bytes);
        }
  // Pinning the solver's choices reproduces the file with one trial per section.
  WriteReport pinned_report;
  EXPECT_EQ(serialize_artifact(a, pin_choices(all, best), &pinned_report), chosen);
  for (const SectionReport& s : pinned_report.sections) EXPECT_EQ(s.trials, 1);
  // Deterministic: same input, same bytes, regardless of thread count.
  all.threads = 1;
  EXPECT_EQ(serialize_artifact(a, all), chosen);
  EXPECT_GT(plain_brotli_bytes(a), 0u);
}
