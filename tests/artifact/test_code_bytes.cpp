#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "artifact/code_bytes.h"
#include "core/error.h"

using namespace pgolf;
using namespace pgolf::artifact;
namespace fs = std::filesystem;

namespace {
void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << s;
}
}  // namespace

TEST(CodeBytes, CountsOnlyTheEvaluatorSourcesDeterministically) {
  const fs::path root = fs::temp_directory_path() / fmt::format("pgolf_codebytes_{}", ::getpid());
  fs::remove_all(root);
  write(root / "CMakeLists.txt", "project(x)\n");
  write(root / "src/b/z.cpp", "int z;\n");
  write(root / "src/a.h", "#pragma once\n");
  write(root / "src/core/build_info.h.in", "@X@\n");
  write(root / "src/k.cu", "__global__ void k(){}\n");
  write(root / "src/notes.md", "not counted\n");
  write(root / "tests/t.cpp", "not counted\n");
  const auto files = counted_source_files(root.string());
  EXPECT_EQ(files, (std::vector<std::string>{"CMakeLists.txt", "src/a.h", "src/b/z.cpp", "src/core/build_info.h.in",
                                             "src/k.cu"}));
  const auto tar1 = deterministic_tar(root.string(), files);
  EXPECT_EQ(tar1.size() % 512, 0u);
  EXPECT_EQ(tar1.size(), 5 * 1024u + 1024u);  // 5 × (header + one data block) + end blocks
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(tar1.data()) + 257, 5), "ustar");
  // Touching mtimes does not change the archive; changing content does.
  fs::last_write_time(root / "src/a.h", fs::file_time_type::clock::now() - std::chrono::hours(5));
  EXPECT_EQ(deterministic_tar(root.string(), files), tar1);
  const CodeBytes cb = compute_code_bytes(root.string());
  EXPECT_EQ(cb.files, 5u);
  EXPECT_GT(cb.code_bytes, 0u);
  EXPECT_LT(cb.code_bytes, cb.tar_bytes);
  write(root / "src/a.h", "#pragma once\nint more_code_here = 1;\n");
  EXPECT_NE(deterministic_tar(root.string(), files), tar1);
  CountedBytes c{15'990'000, 20'000};
  EXPECT_FALSE(c.within());
  EXPECT_TRUE((CountedBytes{15'000'000, 20'000}.within()));
  EXPECT_THROW(counted_source_files((root / "src").string()), Error);
  fs::remove_all(root);
}

TEST(CodeBytes, RealTreeListsItsSources) {
  // (brotli-11 of the real tree takes seconds; the archive itself is what this checks)
  const auto files = counted_source_files(PGOLF_SOURCE_DIR);
  EXPECT_GT(files.size(), 10u);
  EXPECT_EQ(files.front(), "CMakeLists.txt");
  EXPECT_NE(std::find(files.begin(), files.end(), "src/artifact/code_bytes.cpp"), files.end());
  for (const auto& f : files) EXPECT_TRUE(f == "CMakeLists.txt" || f.rfind("src/", 0) == 0) << f;
}
