// Chart scaling, ticks, labels, escaping and decimation of the report's SVG library.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "report/html.h"
#include "report/svg_chart.h"

using namespace pgolf::report;

namespace {

int count(const std::string& s, const std::string& sub) {
  int n = 0;
  for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
  return n;
}

}  // namespace

TEST(ReportChart, NiceTicksAreRoundAndCoverTheRange) {
  EXPECT_EQ(nice_ticks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const auto unit = nice_ticks(0, 1, 5);
  ASSERT_EQ(unit.size(), 6u);
  for (size_t i = 0; i < unit.size(); ++i) EXPECT_NEAR(unit[i], 0.2 * static_cast<double>(i), 1e-12);
  const auto t = nice_ticks(3.7, 8.2, 5);  // step 1: 4..8
  ASSERT_EQ(t.size(), 5u);
  EXPECT_DOUBLE_EQ(t.front(), 4);
  EXPECT_DOUBLE_EQ(t.back(), 8);
  const auto neg = nice_ticks(-0.03, 0.02, 5);  // step 0.01, and 0 is exactly 0 (no "-0")
  EXPECT_EQ(neg.size(), 6u);
  EXPECT_EQ(std::signbit(neg[3]), false);
  EXPECT_EQ(neg[3], 0.0);
  EXPECT_EQ(nice_ticks(10, 0, 5), nice_ticks(0, 10, 5));  // reversed input
  EXPECT_GE(nice_ticks(5, 5, 5).size(), 2u);              // flat data still gets an axis
  EXPECT_TRUE(nice_ticks(0, NAN, 5).empty());
}

TEST(ReportChart, NiceRangeEndsOnTicks) {
  const Range r = nice_range(3.7, 8.2, 5);
  EXPECT_DOUBLE_EQ(r.lo, 3);
  EXPECT_DOUBLE_EQ(r.hi, 9);
  const Range big = nice_range(1, 19873, 5);
  EXPECT_DOUBLE_EQ(big.lo, 0);
  EXPECT_DOUBLE_EQ(big.hi, 20000);
  const Range flat = nice_range(2, 2, 5);
  EXPECT_LT(flat.lo, 2);
  EXPECT_GT(flat.hi, 2);
}

TEST(ReportChart, LogTicks) {
  const auto decades = log_ticks(1e-4, 1);  // wide: powers of ten only
  ASSERT_EQ(decades.size(), 5u);
  for (size_t i = 0; i < decades.size(); ++i) EXPECT_NEAR(std::log10(decades[i]), -4.0 + static_cast<double>(i), 1e-12);
  EXPECT_EQ(log_ticks(1, 60), (std::vector<double>{1, 2, 5, 10, 20, 50}));
  const auto narrow = log_ticks(3.2, 4.4);  // no 1/2/5 inside: falls back to plain ticks
  ASSERT_GE(narrow.size(), 2u);
  for (double v : narrow) {
    EXPECT_GE(v, 3.2);
    EXPECT_LE(v, 4.4);
  }
  EXPECT_TRUE(log_ticks(0, 10).empty());
}

TEST(ReportChart, ScaleMapsLinearAndLog) {
  Scale lin{0, 10, 100, 200, false};
  EXPECT_DOUBLE_EQ(lin.map(0), 100);
  EXPECT_DOUBLE_EQ(lin.map(5), 150);
  EXPECT_DOUBLE_EQ(lin.map(10), 200);
  Scale y{0, 10, 300, 20, false};  // SVG y grows downwards
  EXPECT_DOUBLE_EQ(y.map(10), 20);
  Scale lg{1, 100, 0, 200, true};
  EXPECT_DOUBLE_EQ(lg.map(10), 100);
  EXPECT_DOUBLE_EQ(lg.map(100), 200);
  Scale flat{5, 5, 0, 100, false};
  EXPECT_DOUBLE_EQ(flat.map(5), 50);
}

TEST(ReportChart, TickLabels) {
  EXPECT_EQ(format_tick(0, 0.2), "0");
  EXPECT_EQ(format_tick(0.4, 0.2), "0.4");
  EXPECT_EQ(format_tick(4, 1), "4");
  EXPECT_EQ(format_tick(0.05, 0.01), "0.05");
  EXPECT_EQ(format_tick(20000, 5000), "20k");
  EXPECT_EQ(format_tick(1.5e6, 5e5), "1.5M");
  EXPECT_EQ(format_tick(2e9, 1e9), "2G");
  EXPECT_EQ(format_tick(3e-6, 1e-6), "3.0e-06");
  EXPECT_EQ(format_bytes(15'800'000), "15.80 MB");
  EXPECT_EQ(format_bytes(2500), "2.5 kB");
  EXPECT_EQ(format_bytes(12), "12 B");
}

TEST(ReportChart, EscapesText) {
  EXPECT_EQ(escape_xml(R"(<a href="x">&'</a>)"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(escape_xml(std::string("a\x01" "b\n")), "a?b\n");
  EXPECT_EQ(html_pre("<script>"), "<pre>&lt;script&gt;</pre>\n");
  const std::string t = html_table({"<h>"}, {{"1 & 2"}, {"-3"}, {"x"}});
  EXPECT_NE(t.find("<th>&lt;h&gt;</th>"), std::string::npos);
  EXPECT_NE(t.find("<td class=\"num\">1 &amp; 2</td>"), std::string::npos);
  EXPECT_NE(t.find("<td class=\"num\">-3</td>"), std::string::npos);
  EXPECT_NE(t.find("<td>x</td>"), std::string::npos);
}

TEST(ReportChart, LineChartEscapesAndDrawsEverySeries) {
  LineChart c;
  c.title = "loss <&> \"q\"";
  c.x.label = "step";
  c.y.label = "loss";
  c.series.push_back({"train <1>", {1, 2, 3, 4}, {5, 4, NAN, 3}, "", false, false});
  c.series.push_back({"val", {1, 4}, {4.5, 3.2}, "#123456", true, true});
  const std::string svg = render_line_chart(c);
  EXPECT_EQ(svg.find("<&>"), std::string::npos);
  EXPECT_EQ(svg.find("<1>"), std::string::npos);
  EXPECT_NE(svg.find("loss &lt;&amp;&gt; &quot;q&quot;"), std::string::npos);
  EXPECT_NE(svg.find("train &lt;1&gt;"), std::string::npos);
  EXPECT_EQ(count(svg, "<path "), 2);
  EXPECT_EQ(count(svg, "<circle "), 2);  // markers on the val series only
  // The NaN breaks the first line: two M commands in its path.
  const size_t p = svg.find("<path d=\"");
  const std::string d = svg.substr(p, svg.find('"', p + 9) - p);
  EXPECT_EQ(count(d, "M"), 2);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_EQ(svg.rfind("</svg>"), svg.size() - 6);
}

TEST(ReportChart, PointsStayInsideThePlotArea) {
  LineChart c;
  c.width = 400;
  c.height = 300;
  c.y.log = true;
  c.series.push_back({"s", {0, 10, 20, 30}, {0.001, 10, -1, 200}, "", false, true});  // -1 is skipped on log y
  const std::string svg = render_line_chart(c);
  std::regex circle(R"re(<circle cx="([-0-9.]+)" cy="([-0-9.]+)")re");
  int n = 0;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator(); ++it, ++n) {
    const double x = std::stod((*it)[1]), y = std::stod((*it)[2]);
    EXPECT_GE(x, 0);
    EXPECT_LE(x, 400);
    EXPECT_GE(y, 0);
    EXPECT_LE(y, 300);
  }
  EXPECT_EQ(n, 3);
}

TEST(ReportChart, EmptyChartSaysNoData) {
  LineChart c;
  c.title = "t";
  c.series.push_back({"s", {}, {}, "", false, false});
  EXPECT_NE(render_line_chart(c).find("no data"), std::string::npos);
  BarChart b;
  b.title = "b";
  EXPECT_NE(render_bar_chart(b).find("no data"), std::string::npos);
}

TEST(ReportChart, BarChartOneRectPerValue) {
  BarChart b;
  b.title = "bytes";
  b.bytes = true;
  b.categories = {"attn <q>", "mlp"};
  b.series.push_back({"run a", {1000, 2000}, ""});
  b.series.push_back({"run b", {1500, NAN}, ""});
  const std::string svg = render_bar_chart(b);
  EXPECT_EQ(count(svg, "<rect x="), 3);  // the NaN bar is left out
  EXPECT_NE(svg.find("attn &lt;q&gt;"), std::string::npos);
  EXPECT_NE(svg.find("2.0 kB"), std::string::npos);
  EXPECT_NE(svg.find("run b"), std::string::npos);  // legend with several series
}

TEST(ReportChart, DecimationKeepsExtremesAndEnds) {
  std::vector<double> y(10000);
  for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(static_cast<double>(i) * 0.01);
  y[5003] = 50;   // a spike
  y[7001] = NAN;  // a gap
  const auto idx = decimate_min_max(y, 400);
  EXPECT_LE(idx.size(), 404u);
  EXPECT_EQ(idx.front(), 0u);
  EXPECT_EQ(idx.back(), y.size() - 1);
  EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
  EXPECT_NE(std::find(idx.begin(), idx.end(), 5003u), idx.end());
  EXPECT_NE(std::find(idx.begin(), idx.end(), 7001u), idx.end());
  EXPECT_EQ(decimate_min_max({1, 2, 3}, 400).size(), 3u);
}
