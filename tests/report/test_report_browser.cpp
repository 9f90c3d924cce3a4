// Opens generated reports in headless Chromium: the page must load without console errors, the
// browser's DOM must hold the SVG charts, and a screenshot is kept under the build directory.
// Skipped when /usr/bin/chromium is absent (scripts/setup.sh installs it with PGOLF_WITH_BROWSER=1).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "report/report.h"
#include "report_test_util.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kChromium = "/usr/bin/chromium";

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs headless Chromium on file://page with `mode` (--screenshot=... or --dump-dom); returns
// its exit status and fills stdout/stderr.
int run_chromium(const fs::path& page, const std::string& mode, const fs::path& work, std::string* out, std::string* err) {
  const fs::path profile = work / "profile";
  fs::remove_all(profile);
  fs::create_directories(profile);
  const std::string cmd = fmt::format(
      "timeout 60 {} --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
      "--disable-component-update --disable-sync --user-data-dir='{}' --enable-logging=stderr --v=0 "
      "--window-size=1280,2000 {} 'file://{}' >'{}' 2>'{}'",
      kChromium, profile.string(), mode, page.string(), (work / "out.txt").string(), (work / "err.txt").string());
  const int rc = std::system(cmd.c_str());
  *out = slurp(work / "out.txt");
  *err = slurp(work / "err.txt");
  return rc;
}

// Console messages Chromium logs to stderr look like `...:INFO:CONSOLE(12)] "Uncaught ..."`.
std::vector<std::string> console_errors(const std::string& log) {
  std::vector<std::string> bad;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find("Uncaught") != std::string::npos || line.find("CONSOLE") != std::string::npos ||
        line.find("Refused to") != std::string::npos)
      bad.push_back(line);
  return bad;
}

int count(const std::string& s, const std::string& sub) {
  int n = 0;
  for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
  return n;
}

void check_page_in_browser(const fs::path& page, const std::string& shot_name, int min_svgs) {
  const fs::path work = fs::path(PGOLF_BINARY_DIR) / "report_test" / shot_name;
  fs::create_directories(work);
  const fs::path shot = fs::path(PGOLF_BINARY_DIR) / (shot_name + ".png");
  fs::remove(shot);
  std::string out, err;
  int rc = run_chromium(page, "--screenshot=" + shot.string(), work, &out, &err);
  ASSERT_EQ(rc, 0) << "chromium failed on " << page << ":\n" << err;
  EXPECT_TRUE(console_errors(err).empty()) << "console errors:\n" << err;
  ASSERT_TRUE(fs::exists(shot)) << "no screenshot; chromium said:\n" << err;
  EXPECT_GT(fs::file_size(shot), 20000u);  // a blank page compresses to a few kB

  rc = run_chromium(page, "--dump-dom", work, &out, &err);
  ASSERT_EQ(rc, 0) << err;
  EXPECT_TRUE(console_errors(err).empty()) << "console errors:\n" << err;
  EXPECT_GE(count(out, "<svg "), min_svgs) << "DOM:\n" << out.substr(0, 2000);
  EXPECT_EQ(count(out, "<svg "), count(out, "</svg>"));  // every chart parsed as a closed element
  EXPECT_EQ(out.find("<script"), std::string::npos);
}

}  // namespace

TEST(ReportBrowser, RunReportLoadsInChromium) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed (PGOLF_WITH_BROWSER=1 scripts/setup.sh)";
  const std::string dir = pgolf::report::test_util::make_synthetic_run("browser", 200);
  const std::string page = pgolf::report::write_run_report(dir);
  // 4 loss + 3 schedule + 3 throughput + 4 artifact + 1 eval phase chart.
  check_page_in_browser(page, "report", 15);
  fs::remove_all(dir);
}

TEST(ReportBrowser, ComparisonLoadsInChromium) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed (PGOLF_WITH_BROWSER=1 scripts/setup.sh)";
  const std::string a = pgolf::report::test_util::make_synthetic_run("cmp_a", 120);
  const std::string b = pgolf::report::test_util::make_synthetic_run("cmp_b", 200, 0.95);
  const fs::path page = fs::path(PGOLF_BINARY_DIR) / "report_test" / "compare.html";
  fs::create_directories(page.parent_path());
  pgolf::report::write_comparison_report({a, b}, page.string());
  check_page_in_browser(page, "report_compare", 10);
  fs::remove_all(a);
  fs::remove_all(b);
}
