#pragma once
// A small SVG chart library for the run report: line charts (linear or log axes, several series,
// legend) and horizontal grouped bar charts. Output is a standalone <svg> element with all text
// escaped; no scripts, no external resources, so the report opens offline in any browser.
#include <string>
#include <vector>

namespace pgolf::report {

// ---- scales and ticks (exposed for tests)

// Round-number tick positions (1, 2 or 5 times a power of ten) covering [lo, hi]; about `target`
// of them. lo > hi is swapped; lo == hi is widened so there is always a range to draw.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// The smallest range [lo', hi'] ⊇ [lo, hi] whose ends are multiples of the nice tick step.
struct Range {
  double lo = 0, hi = 1;
};
Range nice_range(double lo, double hi, int target = 5);

// Ticks for a log axis on [lo, hi] (both > 0): powers of ten, plus 2x and 5x when the range spans
// few decades, plus plain nice ticks when even that gives fewer than two.
std::vector<double> log_ticks(double lo, double hi);

// Tick label: enough decimals to tell neighbours `step` apart; k/M/G suffixes for big numbers.
std::string format_tick(double v, double step);

// Maps a data interval onto a pixel interval (r0 may exceed r1: SVG y grows downwards).
struct Scale {
  double d0 = 0, d1 = 1, r0 = 0, r1 = 1;
  bool log = false;
  double map(double v) const;
};

// Text safe inside SVG/HTML element content and attribute values (& < > " ').
std::string escape_xml(const std::string& s);

// Keeps at most ~max_points points by taking each bucket's minimum and maximum in x order, so
// spikes stay visible while a 20k-step curve stays a few kB. Returns indices into x.
std::vector<size_t> decimate_min_max(const std::vector<double>& y, size_t max_points);

// ---- charts

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite y breaks the line
  std::string color;         // empty: palette colour by position
  bool dashed = false;
  bool markers = false;      // draw a dot per point (sparse series such as validation)
};

struct Axis {
  std::string label;
  bool log = false;  // non-positive values are skipped on a log axis
};

struct LineChart {
  std::string title;
  Axis x, y;
  std::vector<Series> series;
  int width = 580, height = 320;
};

// Draws the chart; a chart with no finite data renders a framed "no data" note instead.
std::string render_line_chart(const LineChart& c);

struct BarSeries {
  std::string name;
  std::vector<double> values;  // one per category; NaN = missing
  std::string color;
};

struct BarChart {
  std::string title;
  std::string value_label;
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  bool bytes = false;  // value ticks as bytes (kB/MB) rather than plain numbers
  int width = 580;     // height follows the number of bars
};

std::string render_bar_chart(const BarChart& c);

// The i-th colour of the shared palette (distinct, readable on white).
const std::string& palette_color(size_t i);

// Byte counts as "12.3 MB" / "456 kB" / "789 B" (decimal units, like the 16 MB limit).
std::string format_bytes(double bytes);

}  // namespace pgolf::report
