#pragma once
// Helpers for the data tests: where ../shared is, and scratch folders.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace pgolf::data::test {

inline std::string shared_dir() {
  if (const char* env = std::getenv("PGOLF_SHARED_DIR")) return env;
  return std::string(PGOLF_SOURCE_DIR) + "/../shared";
}

inline std::string shared_file(const std::string& rel) { return shared_dir() + "/" + rel; }

inline const std::string kValShard = "data/fineweb/pg-val-prefix-sp1024/fineweb_val_prefix_sp1024.bin";
inline const std::string kValDocs = "data/fineweb/pg-val-prefix-sp1024/fineweb_val_prefix_docs.jsonl.xz";
inline const std::string kSp1024 = "data/tokenizers/fineweb_1024_bpe.model";

#define PG_REQUIRE_SHARED(rel)                                                                    \
  do {                                                                                            \
    if (!std::filesystem::exists(::pgolf::data::test::shared_file(rel)))                          \
      GTEST_SKIP() << "shared data absent: " << ::pgolf::data::test::shared_file(rel);           \
  } while (0)

// A fresh, empty folder removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("pgolf_data_") + info->test_suite_name() + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace pgolf::data::test
