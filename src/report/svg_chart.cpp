#include "report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace pgolf::report {

namespace {

constexpr double kCharW = 6.2;  // rough width of an 11px sans-serif character, for layout only

// 1, 2 or 5 times a power of ten, near range / target.
double nice_step(double range, int target) {
  const double raw = range / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double frac = raw / mag;
  const double nice = frac < 1.5 ? 1 : frac < 3 ? 2 : frac < 7 ? 5 : 10;
  return nice * mag;
}

// Gives a degenerate interval some width so scales never divide by zero.
void widen_if_flat(double& lo, double& hi) {
  if (lo > hi) std::swap(lo, hi);
  const double scale = std::max(std::fabs(lo), std::fabs(hi));
  if (hi - lo <= scale * 1e-12) {
    const double d = scale == 0 ? 1.0 : scale * 0.1;
    lo -= d;
    hi += d;
  }
}

std::string num(double v) { return fmt::format("{:.1f}", v); }

double text_width(const std::string& s, double char_w = kCharW) { return static_cast<double>(s.size()) * char_w; }

struct LegendItem {
  std::string name, color;
  bool dashed = false;
};

// Lays out legend entries left to right, wrapping at `width`; returns the SVG and the rows used.
std::string render_legend(const std::vector<LegendItem>& items, double x0, double y0, double width, int* rows) {
  std::string out;
  double x = x0, y = y0;
  *rows = items.empty() ? 0 : 1;
  for (const auto& it : items) {
    const double w = 22 + text_width(it.name) + 14;
    if (x > x0 && x + w > x0 + width) {
      x = x0;
      y += 16;
      ++*rows;
    }
    out += fmt::format(R"(<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2.5"{}/>)", num(x),
                       num(y - 4), num(x + 16), num(y - 4), it.color, it.dashed ? R"( stroke-dasharray="5 3")" : "");
    out += fmt::format(R"(<text x="{}" y="{}" class="lg">{}</text>)", num(x + 20), num(y), escape_xml(it.name));
    x += w;
  }
  return out;
}

std::vector<LegendItem> legend_items_line(const LineChart& c) {
  std::vector<LegendItem> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    items.push_back({c.series[i].name, c.series[i].color.empty() ? palette_color(i) : c.series[i].color,
                     c.series[i].dashed});
  return items;
}

int legend_rows(const std::vector<LegendItem>& items, double width) {
  int rows = 0;
  render_legend(items, 0, 0, width, &rows);
  return rows;
}

std::string svg_open(int w, int h, const std::string& title) {
  return fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{}" height="{}" viewBox="0 0 {} {}" )"
                     R"(role="img" aria-label="{}"><rect width="100%" height="100%" fill="#fff"/>)"
                     R"(<text x="{}" y="18" class="ttl" text-anchor="middle">{}</text>)",
                     w, h, w, h, escape_xml(title), w / 2, escape_xml(title));
}

bool usable(double x, double y, const LineChart& c) {
  return std::isfinite(x) && std::isfinite(y) && (!c.x.log || x > 0) && (!c.y.log || y > 0);
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  widen_if_flat(lo, hi);
  const double step = nice_step(hi - lo, target);
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9 && ticks.size() < 1000; k += 1) {
    double v = k * step;
    if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0"
    ticks.push_back(v);
  }
  return ticks;
}

Range nice_range(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  widen_if_flat(lo, hi);
  const double step = nice_step(hi - lo, target);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step};
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!(lo > 0) || !(hi > 0) || !std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (lo > hi) std::swap(lo, hi);
  if (hi <= lo) hi = lo * 10;
  const int k0 = static_cast<int>(std::floor(std::log10(lo))), k1 = static_cast<int>(std::ceil(std::log10(hi)));
  const bool wide = hi / lo >= 1000;
  std::vector<double> ticks;
  for (int k = k0; k <= k1; ++k) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (wide && m != 1.0) continue;
      const double v = m * std::pow(10.0, k);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push_back(v);
    }
  }
  if (ticks.size() < 2) {
    ticks.clear();
    for (double v : nice_ticks(lo, hi, 4))
      if (v > 0) ticks.push_back(v);
  }
  return ticks;
}

std::string format_tick(double v, double step) {
  if (!std::isfinite(v)) return "";
  if (v == 0) return "0";
  const double mag = std::max(std::fabs(v), std::fabs(step));
  double div = 1;
  const char* suffix = "";
  if (mag >= 1e9) div = 1e9, suffix = "G";
  else if (mag >= 1e6) div = 1e6, suffix = "M";
  else if (mag >= 1e4) div = 1e3, suffix = "k";
  const double s = std::fabs(step) / div;
  if (div == 1 && s > 0 && s < 1e-4) return fmt::format("{:.1e}", v);
  const int decimals = s > 0 ? std::clamp(static_cast<int>(-std::floor(std::log10(s) + 1e-9)), 0, 6) : 0;
  return fmt::format("{:.{}f}{}", v / div, decimals, suffix);
}

double Scale::map(double v) const {
  double t;
  if (log) {
    const double a = std::log10(d0), b = std::log10(d1);
    t = b != a ? (std::log10(v) - a) / (b - a) : 0.5;
  } else {
    t = d1 != d0 ? (v - d0) / (d1 - d0) : 0.5;
  }
  return r0 + t * (r1 - r0);
}

std::string escape_xml(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // Control characters are not allowed in XML text; a log line could carry one.
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\n' && ch != '\t' && ch != '\r') out += '?';
        else out += ch;
    }
  }
  return out;
}

std::vector<size_t> decimate_min_max(const std::vector<double>& y, size_t max_points) {
  const size_t n = y.size();
  std::vector<size_t> idx;
  if (n <= std::max<size_t>(max_points, 2)) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  const size_t buckets = std::max<size_t>(max_points / 2, 1);
  idx.push_back(0);
  for (size_t b = 0; b < buckets; ++b) {
    const size_t s = b * n / buckets, e = (b + 1) * n / buckets;
    size_t lo = n, hi = n;
    for (size_t i = s; i < e; ++i) {
      if (!std::isfinite(y[i])) {
        lo = hi = i;  // keep one gap marker so the line still breaks here
        break;
      }
      if (lo == n || y[i] < y[lo]) lo = i;
      if (hi == n || y[i] > y[hi]) hi = i;
    }
    if (lo == n) continue;
    idx.push_back(std::min(lo, hi));
    idx.push_back(std::max(lo, hi));
  }
  idx.push_back(n - 1);
  std::sort(idx.begin(), idx.end());
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  return idx;
}

const std::string& palette_color(size_t i) {
  static const std::vector<std::string> colors = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colors[i % colors.size()];
}

std::string format_bytes(double bytes) {
  if (!std::isfinite(bytes)) return "?";
  const double a = std::fabs(bytes);
  if (a >= 1e6) return fmt::format("{:.2f} MB", bytes / 1e6);
  if (a >= 1e3) return fmt::format("{:.1f} kB", bytes / 1e3);
  return fmt::format("{:.0f} B", bytes);
}

std::string render_line_chart(const LineChart& c) {
  const int W = c.width, H = c.height;
  const double ml = 62, mr = 16, mb = 44;
  const auto items = legend_items_line(c);
  const int rows = legend_rows(items, W - ml - mr);
  const double mt = 30 + rows * 16;
  const double px0 = ml, px1 = W - mr, py0 = mt, py1 = H - mb;

  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const auto& s : c.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (usable(s.x[i], s.y[i], c)) {
        xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
        ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
      }

  std::string out = svg_open(W, H, c.title);
  out += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)", num(px0), num(py0),
                     num(px1 - px0), num(py1 - py0));
  if (!std::isfinite(xlo)) {
    out += fmt::format(R"(<text x="{}" y="{}" class="nd" text-anchor="middle">no data</text></svg>)",
                       num((px0 + px1) / 2), num((py0 + py1) / 2));
    return out;
  }
  int dummy = 0;
  out += render_legend(items, px0, 30 + 10, px1 - px0, &dummy);

  auto make_axis = [](const Axis& a, double lo, double hi, int target, Scale& sc, std::vector<double>& ticks,
                      double& step) {
    sc.log = a.log;
    if (a.log) {
      if (hi <= lo) lo /= 1.5, hi *= 1.5;
      sc.d0 = lo, sc.d1 = hi;
      ticks = log_ticks(lo, hi);
      step = 0;
    } else {
      const Range r = nice_range(lo, hi, target);
      sc.d0 = r.lo, sc.d1 = r.hi;
      ticks = nice_ticks(r.lo, r.hi, target);
      step = ticks.size() >= 2 ? ticks[1] - ticks[0] : 1;
    }
  };
  Scale sx, sy;
  std::vector<double> xt, yt;
  double xstep, ystep;
  make_axis(c.x, xlo, xhi, std::max(2, static_cast<int>((px1 - px0) / 90)), sx, xt, xstep);
  make_axis(c.y, ylo, yhi, std::max(2, static_cast<int>((py1 - py0) / 45)), sy, yt, ystep);
  sx.r0 = px0, sx.r1 = px1, sy.r0 = py1, sy.r1 = py0;

  for (double t : xt) {
    const double X = sx.map(t);
    out += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" class="grid"/>)", num(X), num(py0), num(py1));
    out += fmt::format(R"(<text x="{}" y="{}" class="tk" text-anchor="middle">{}</text>)", num(X), num(py1 + 14),
                       escape_xml(format_tick(t, c.x.log ? t : xstep)));
  }
  for (double t : yt) {
    const double Y = sy.map(t);
    out += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" class="grid"/>)", num(px0), num(Y), num(px1));
    out += fmt::format(R"(<text x="{}" y="{}" class="tk" text-anchor="end">{}</text>)", num(px0 - 5), num(Y + 4),
                       escape_xml(format_tick(t, c.y.log ? t : ystep)));
  }
  out += fmt::format(R"(<text x="{}" y="{}" class="ax" text-anchor="middle">{}</text>)", num((px0 + px1) / 2),
                     num(H - 8), escape_xml(c.x.label + (c.x.log ? " (log)" : "")));
  out += fmt::format(R"svg(<text transform="translate(13 {}) rotate(-90)" class="ax" text-anchor="middle">{}</text>)svg",
                     num((py0 + py1) / 2), escape_xml(c.y.label + (c.y.log ? " (log)" : "")));

  for (size_t si = 0; si < c.series.size(); ++si) {
    const Series& s = c.series[si];
    const std::string& color = s.color.empty() ? palette_color(si) : s.color;
    const size_t n = std::min(s.x.size(), s.y.size());
    std::vector<double> ys(s.y.begin(), s.y.begin() + static_cast<std::ptrdiff_t>(n));
    std::string path, dots;
    bool pen_down = false;
    for (size_t i : decimate_min_max(ys, static_cast<size_t>(2 * (px1 - px0)))) {
      if (!usable(s.x[i], s.y[i], c)) {
        pen_down = false;
        continue;
      }
      const double X = sx.map(s.x[i]), Y = sy.map(s.y[i]);
      path += fmt::format("{}{} {} ", pen_down ? "L" : "M", num(X), num(Y));
      pen_down = true;
      if (s.markers) dots += fmt::format(R"(<circle cx="{}" cy="{}" r="2.5" fill="{}"/>)", num(X), num(Y), color);
    }
    out += fmt::format(R"(<g><title>{}</title>)", escape_xml(s.name));
    if (!path.empty())
      out += fmt::format(R"(<path d="{}" fill="none" stroke="{}" stroke-width="1.6"{}/>)", path, color,
                         s.dashed ? R"( stroke-dasharray="5 3")" : "");
    out += dots + "</g>";
  }
  out += "</svg>";
  return out;
}

std::string render_bar_chart(const BarChart& c) {
  const size_t n = c.categories.size(), m = std::max<size_t>(c.series.size(), 1);
  size_t label_len = 4;
  for (const auto& cat : c.categories) label_len = std::max(label_len, cat.size());
  const double ml = std::min(240.0, 12 + text_width(std::string(label_len, 'x'))), mr = 70, mb = 40;
  std::vector<LegendItem> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    items.push_back({c.series[i].name, c.series[i].color.empty() ? palette_color(i) : c.series[i].color, false});
  const bool show_legend = c.series.size() > 1;
  const int rows = show_legend ? legend_rows(items, c.width - ml - mr) : 0;
  const double mt = 30 + rows * 16, bar_h = m > 1 ? 11 : 14, gap = 8;
  const double group_h = static_cast<double>(m) * bar_h + gap;
  const int H = static_cast<int>(mt + std::max<double>(static_cast<double>(n), 1) * group_h + mb);
  const double px0 = ml, px1 = c.width - mr, py0 = mt, py1 = H - mb;

  double vmax = 0;
  bool any = false;
  for (const auto& s : c.series)
    for (double v : s.values)
      if (std::isfinite(v)) vmax = std::max(vmax, v), any = true;

  std::string out = svg_open(c.width, H, c.title);
  if (!any || n == 0) {
    out += fmt::format(R"(<text x="{}" y="{}" class="nd" text-anchor="middle">no data</text></svg>)",
                       c.width / 2, num((py0 + py1) / 2));
    return out;
  }
  if (show_legend) {
    int dummy = 0;
    out += render_legend(items, px0, 30 + 10, px1 - px0, &dummy);
  }
  const Range r = nice_range(0, vmax > 0 ? vmax : 1, 5);
  Scale sx{0, r.hi, px0, px1, false};
  const auto ticks = nice_ticks(0, r.hi, 5);
  const double step = ticks.size() >= 2 ? ticks[1] - ticks[0] : 1;
  for (double t : ticks) {
    const double X = sx.map(t);
    out += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" class="grid"/>)", num(X), num(py0), num(py1));
    out += fmt::format(R"(<text x="{}" y="{}" class="tk" text-anchor="middle">{}</text>)", num(X), num(py1 + 14),
                       escape_xml(c.bytes ? format_bytes(t) : format_tick(t, step)));
  }
  out += fmt::format(R"(<text x="{}" y="{}" class="ax" text-anchor="middle">{}</text>)", num((px0 + px1) / 2),
                     num(H - 8), escape_xml(c.value_label));
  for (size_t ci = 0; ci < n; ++ci) {
    const double gy = py0 + gap / 2 + static_cast<double>(ci) * group_h;
    std::string label = c.categories[ci];
    const size_t max_chars = static_cast<size_t>((ml - 12) / kCharW);
    if (label.size() > max_chars && max_chars > 3) label = label.substr(0, max_chars - 2) + "..";
    out += fmt::format(R"(<text x="{}" y="{}" class="tk" text-anchor="end">{}</text>)", num(px0 - 6),
                       num(gy + static_cast<double>(m) * bar_h / 2 + 4), escape_xml(label));
    for (size_t si = 0; si < c.series.size(); ++si) {
      const auto& s = c.series[si];
      if (ci >= s.values.size() || !std::isfinite(s.values[ci])) continue;
      const double v = s.values[ci];
      const double y = gy + static_cast<double>(si) * bar_h, w = std::max(0.0, sx.map(v) - px0);
      const std::string text = c.bytes ? format_bytes(v) : format_tick(v, step / 100);
      out += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}{}: {}</title></rect>)",
                         num(px0), num(y), num(w), num(bar_h - 1), s.color.empty() ? palette_color(si) : s.color,
                         escape_xml(c.categories[ci]), escape_xml(c.series.size() > 1 ? " / " + s.name : ""),
                         escape_xml(text));
      out += fmt::format(R"(<text x="{}" y="{}" class="bv">{}</text>)", num(px0 + w + 3), num(y + bar_h - 3),
                         escape_xml(text));
    }
  }
  out += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#666"/>)", num(px0), num(py0), num(py1));
  out += "</svg>";
  return out;
}

}  // namespace pgolf::report
